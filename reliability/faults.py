"""A fault-injecting HTTP proxy, put in front of moto: AWS faults moto cannot make itself.

moto answers every request correctly and at once; the soak also needs a Secrets Manager
that is slow, fails (HTTP 500 `InternalServiceError`, HTTP 400 `ThrottlingException`,
as the AWS JSON protocol sends them) or refuses connections. The server's boto3 client
is pointed at this proxy (`--aws-endpoint-url`), which forwards each request to moto
unchanged unless a fault is switched on. When moto itself is down, the proxy drops the
client's connection unanswered, as a TCP load balancer with no healthy target does.

Built on the stand-ins' HTTP server (tests/support/standin.py): `stop()` closes the
listening socket (connections refused) and `start()` opens it again on the same port.
Answers are HTTP/1.0, one request a connection, so a fault applies to the very next
request.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, cast

from tests.support.standin import HttpStandIn, StandInServer

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade"}
)


@dataclass(frozen=True)
class AwsError:
    """An error answer as Secrets Manager's JSON protocol sends it."""

    status: int
    code: str
    message: str

    def body(self) -> bytes:
        return json.dumps({"__type": self.code, "message": self.message}).encode()


JSON_1_1 = "application/x-amz-json-1.1"
INTERNAL_ERROR = AwsError(500, "InternalServiceError", "An error occurred on the server side.")
THROTTLED = AwsError(400, "ThrottlingException", "Rate exceeded")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: no access log on stderr."""

    def _proxy(self) -> None:
        server = cast(StandInServer, self.server)
        proxy = cast(FaultProxy, server.standin)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        proxy.note_request()
        delay = proxy.delay
        if delay > 0 and server.stopping.wait(delay):
            self.close_connection = True  # stopped while delaying: drop it unanswered
            return
        error = proxy.error
        if error is not None:
            headers = {"x-amzn-errortype": error.code, "content-type": JSON_1_1}
            self._answer(error.status, error.body(), headers)
            return
        try:
            status, payload, headers = self._forward(proxy.upstream_port, body)
        except OSError:  # moto is down: drop the connection, as a TCP balancer would
            self.close_connection = True
            return
        self._answer(status, payload, headers)

    def _forward(self, port: int, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        upstream = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            upstream.request(self.command, self.path, body=body, headers=headers)
            answer = upstream.getresponse()
            payload = answer.read()
            kept = {k.lower(): v for k, v in answer.getheaders()}
            return answer.status, payload, kept
        finally:
            upstream.close()

    def _answer(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
        """`headers` in lower case; hop-by-hop ones and the length are set here."""
        self.send_response_only(status)
        for name, value in headers.items():
            if name not in _HOP_BY_HOP and name not in ("content-length", "server", "date"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _proxy
    do_POST = _proxy
    do_PUT = _proxy
    do_DELETE = _proxy


class FaultProxy(HttpStandIn):
    """Forwards to moto on `upstream_port`; `delay`, `error` and `stop()` are the faults."""

    name = "aws-fault-proxy"
    handler = _Handler

    def __init__(self, upstream_port: int) -> None:
        super().__init__()
        self.upstream_port = upstream_port
        self.delay = 0.0  # seconds before forwarding (or answering the error)
        self.error: AwsError | None = None  # answer this instead of forwarding
        self.requests = 0  # every request that reached the proxy

    def note_request(self) -> None:
        self.requests += 1  # a statistic only; an increment lost to a race is harmless

    def clear(self) -> None:
        """No fault: forward every request at once."""
        self.delay = 0.0
        self.error = None
