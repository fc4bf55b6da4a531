"""What the HTTP stand-ins (Vault, the Kubernetes API) share: a threaded server on
127.0.0.1 that can be stopped (connections refused) and started again on the same port,
keeping the stand-in's state, as a real service going down and coming back would.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Self


class StandInServer(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], standin: Any, handler: type[BaseHTTPRequestHandler]
    ) -> None:
        self.standin = standin
        self.stopping = threading.Event()  # set on stop: delayed answers give up at once
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Silent: a client that timed out and left is not an error here."""


class HttpStandIn:
    """Start, stop and restart on the same port; subclasses give `name` and `handler`."""

    name: ClassVar[str]
    handler: ClassVar[type[BaseHTTPRequestHandler]]

    def __init__(self, port: int = 0) -> None:
        self._port = port
        self._server: StandInServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._port == 0:
            raise RuntimeError(f"{type(self).__name__} has not been started yet")
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> Self:
        """Listen (again) on the port: the first start picks one if it was 0."""
        if self._server is not None:
            return self
        server = StandInServer(("127.0.0.1", self._port), self, self.handler)
        self._port = server.server_address[1]
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self.name}-{self._port}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Close the listening socket: the next connection is refused."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.stopping.set()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
