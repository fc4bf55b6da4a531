"""The Prometheus endpoint (`--metrics-port`), bounded: no client can make it grow.

prometheus-client's own `start_http_server` starts a thread per connection and lets it
wait for a request for ever: each idle connection holds a thread. Here a connection has
CONNECTION_TIMEOUT seconds for each read and write, and at most MAX_CONNECTIONS are
served at once; one more is closed at once, without a thread. Prometheus scrapes with
one connection at a time, so neither bound touches it.
"""

from __future__ import annotations

import socket
import threading
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import REGISTRY, make_wsgi_app

CONNECTION_TIMEOUT = 5.0  # seconds a connection may stay silent, reading or writing
MAX_CONNECTIONS = 16  # connections served at once


class _QuietHandler(WSGIRequestHandler):
    """One request per connection, within the timeout; no access log."""

    def log_message(self, format: str, *args: Any) -> None:
        """Nothing: a scrape every few seconds is not an event."""


class _BoundedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a handler never holds the process up on exit

    def __init__(
        self, address: tuple[str, int], family: int, timeout: float, max_connections: int
    ) -> None:
        self.address_family = family
        self._slots = threading.BoundedSemaphore(max_connections)
        handler = type("_Handler", (_QuietHandler,), {"timeout": timeout})
        super().__init__(address, handler)
        self.refused = 0  # connections closed at once because all slots were taken

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Silent: a client that timed out or went away is not an error of ours."""


class MetricsServer:
    """`/metrics` of the default registry on `host:port` (0: any free port), on a thread."""

    def __init__(
        self,
        port: int,
        host: str,
        *,
        timeout: float = CONNECTION_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        family, address = _best_address(host, port)
        self._server = _BoundedServer(address, family, timeout, max_connections)
        self._server.set_app(make_wsgi_app(REGISTRY))
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )
        self._thread.start()

    @property
    def refused(self) -> int:
        return self._server.refused

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _best_address(host: str, port: int) -> tuple[int, tuple[str, int]]:
    """The address family and address to bind `host` with (IPv6 hosts need AF_INET6)."""
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = info[0]
    return int(family), (str(address[0]), port)
