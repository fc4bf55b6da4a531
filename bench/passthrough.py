"""The baseline server: the same generated service, returning every listener unchanged.

Run as its own process, like `python -m server serve`:

    python -m bench.passthrough --host 127.0.0.1 --port P [--workers 16]

It has what our server has around the hook and nothing else: a `grpc.server` on a
16-thread pool with the same options, the EnvoyGatewayExtension service from
`server.api.extension_pb2_grpc` (so requests are decoded and responses encoded by the same
generated code), and the health service the bench waits on. What it lacks is the work:
no parsing of policies, no compile, no interceptor, no logging, no metrics.
"""

from __future__ import annotations

import argparse
import signal
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from server.api import extension_pb2 as api
from server.api import extension_pb2_grpc as api_grpc


class PassThrough(api_grpc.EnvoyGatewayExtensionServicer):  # type: ignore[misc]
    def PostHTTPListenerModify(
        self, request: api.PostHTTPListenerModifyRequest, context: grpc.ServicerContext
    ) -> api.PostHTTPListenerModifyResponse:
        return api.PostHTTPListenerModifyResponse(listener=request.listener)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.passthrough")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="hook"),
        options=[("grpc.so_reuseport", 0)],
    )
    api_grpc.add_EnvoyGatewayExtensionServicer_to_server(PassThrough(), server)
    checks = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    if not server.add_insecure_port(f"{args.host}:{args.port}"):
        raise SystemExit(f"cannot listen on {args.host}:{args.port}")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _signum, _frame: stop.set())
    server.start()
    checks.set("", health_pb2.HealthCheckResponse.SERVING)
    stop.wait()
    server.stop(2).wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
