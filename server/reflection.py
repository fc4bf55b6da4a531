"""Server reflection (grpcurl's `list` and `describe`) that can never take the hook's threads.

A reflection stream runs on one of the server's worker threads for as long as its client
keeps it open, idle or not, and the hook calls share those threads (`--workers`). Left
unbounded, a client that reaches the port and opens as many reflection streams as there
are workers leaves every hook call waiting until Envoy Gateway gives up on it: an error
for every translation, and with `failOpen: false` a freeze of every Gateway. So at most a
quarter of the workers (and never more than MAX_STREAMS) serve reflection at once; a
stream beyond that gets RESOURCE_EXHAUSTED at once, and the hook keeps the rest.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

SERVICE_NAME: str = reflection.SERVICE_NAME
MAX_STREAMS = 4  # a person with grpcurl needs one, for a moment


def stream_limit(workers: int) -> int:
    """Reflection streams at once for this many worker threads: 0 (reflection refused)
    below 4 workers, so that the hook always keeps at least three quarters of them."""
    return min(MAX_STREAMS, workers // 4)


class BoundedReflection(reflection.ReflectionServicer):  # type: ignore[misc]
    """grpcio-reflection's servicer, with a cap on the streams it serves at once."""

    def __init__(self, service_names: Iterable[str], streams: int) -> None:
        super().__init__(tuple(service_names))
        self._serving = streams > 0
        self._slots = threading.BoundedSemaphore(max(streams, 1))

    def ServerReflectionInfo(
        self, request_iterator: Any, context: grpc.ServicerContext
    ) -> Iterator[Any]:
        # A generator from the start: the slot is taken when gRPC first asks for an
        # answer, and the `finally` runs however the stream ends (closed, cancelled).
        if not self._serving or not self._slots.acquire(blocking=False):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "too many server reflection streams open at once; close one and retry",
            )
        try:
            yield from super().ServerReflectionInfo(request_iterator, context)
        finally:
            self._slots.release()


def add_reflection_to_server(
    service_names: Iterable[str], server: grpc.Server, workers: int
) -> None:
    """Serve reflection for `service_names` (and itself), bounded for `workers` threads."""
    servicer = BoundedReflection((*service_names, SERVICE_NAME), stream_limit(workers))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
