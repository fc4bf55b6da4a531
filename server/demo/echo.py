"""An HTTP backend that echoes each request back as JSON.

It plays the part of the seed's example backend: tests and the demo look at the echoed headers
to see what Envoy forwarded (for example ``X-Example-Ext`` after basic auth). Like that backend,
header values are lists (repeated headers keep every value) and names are canonicalised.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


def canonical_header_name(name: str) -> str:
    """Spell a header name the way Go's echo backend does (``x-example-ext`` -> ``X-Example-Ext``).

    Envoy forwards HTTP/1.1 header names in lower case; the seed's backend (Go) canonicalises
    them, and the documented output (``"X-Example-Ext": ["user"]``) depends on that.
    """
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


class _EchoHandler(BaseHTTPRequestHandler):
    """Answers every method with 200 and a JSON description of the request."""

    protocol_version = "HTTP/1.1"  # keep-alive, as Envoy's upstream connections expect

    def _echo(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)  # drain the body so the connection stays usable
        headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            headers.setdefault(canonical_header_name(name), []).append(value)
        body = json.dumps(
            {"path": self.path, "method": self.command, "headers": headers}, indent=1
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_TRACE = _echo

    def log_message(self, format: str, *args: Any) -> None:
        """Stay silent: request logs would drown test and demo output."""


class EchoBackend:
    """A threaded echo server on 127.0.0.1 with an OS-chosen port; use it as a context manager."""

    def __init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="echo-backend", daemon=True
        )
        self._started = False

    @property
    def port(self) -> int:
        """The port the backend listens on (bound at construction, so known before start)."""
        return int(self._server.server_address[1])

    def start(self) -> EchoBackend:
        if not self._started:
            self._thread.start()
            self._started = True
        return self

    def stop(self) -> None:
        if self._started:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._started = False
        self._server.server_close()

    def __enter__(self) -> EchoBackend:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
