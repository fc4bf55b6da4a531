"""One gateway on loopback: the extension server, an echo backend, Envoy and Envoy Gateway's part.

The demo and the end-to-end tests all need the same four pieces wired the same way; this
is that wiring, once. `apply` plays a translation: the listener and the attached policies
go to the hook over gRPC, and its answer goes to Envoy through the file Envoy watches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.demo.echo import EchoBackend
from server.demo.envoy import EnvoyProcess, HttpResponse, free_port, http_get
from server.demo.gateway import ExtensionServerProcess, GatewayStandIn
from server.demo.listeners import eg_http_listener

HOST = "www.example.com"
PATH = "/example"
LISTENER_NAME = "default/eg/http"


@dataclass
class LocalGateway:
    """The running pieces of one Gateway listener `default/eg/http` on 127.0.0.1:`port`."""

    server: ExtensionServerProcess
    backend: EchoBackend
    envoy: EnvoyProcess
    gateway: GatewayStandIn
    listener: Any
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    def apply(self, policies: Sequence[dict[str, Any]] = ()) -> None:
        """Envoy Gateway re-translates with these policies attached and pushes to Envoy."""
        self.envoy.publish([self.gateway.translate(self.listener, policies)])

    def get(self, headers: dict[str, str] | None = None) -> HttpResponse:
        """GET the listener as `curl -H Host: www.example.com` would."""
        return http_get(self.url, headers={"Host": HOST, **(headers or {})})


@contextlib.contextmanager
def local_gateway(
    workdir: Path, *server_args: str, env: Mapping[str, str] | None = None
) -> Iterator[LocalGateway]:
    """Start every piece (the server with `server_args`, and of the user's environment
    only what `env` gives it); stop all of them on the way out.

    Its files are created new and owner-only in `workdir` (server/demo/files.py):
    `extension-server.log`, and Envoy's in a new directory `envoy`.
    """
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(
            ExtensionServerProcess(
                workdir / "extension-server.log", *server_args, env=env, new_log=True
            )
        )
        backend = stack.enter_context(EchoBackend())
        envoy = stack.enter_context(
            EnvoyProcess(workdir / "envoy", "backend", backend.port, private=True)
        )
        gateway = GatewayStandIn(server.address)
        stack.callback(gateway.close)
        port = free_port()
        listener = eg_http_listener(LISTENER_NAME, port, "backend")
        yield LocalGateway(server, backend, envoy, gateway, listener, port)
