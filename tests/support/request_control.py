"""Listeners with request-level control, built the way the hook will, and raw HTTP requests.

`protect` applies our filter with the product's compiler/listener.py `apply` and a
`ChainAuth` carrying the exemptions and credential hiding, as the pipeline does.

The listeners are Envoy Gateway's plain-HTTP listener (server/demo/listeners.py) with an
inline route table instead of RDS, as Envoy Gateway would serve it, with any virtual hosts
(each optionally carrying Envoy Gateway's metadata) and one of the normalisation settings
Envoy Gateway emits. Every route adds `x-router-path: %REQ(:PATH)%`, so the echo backend
shows the path exactly as the router saw it (the backend's own view can differ: Python's
http.server folds a leading '//').

`send` writes the request line byte for byte, so paths reach Envoy unencoded (`..`, '\\',
'%2e', absolute-form targets, any byte), which an HTTP client library would rewrite.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import struct_pb2, wrappers_pb2

from compiler.exemptions import Exemption
from compiler.listener import ChainAuth, apply
from compiler.virtual_hosts import GatewayListener
from server.demo.listeners import eg_http_listener
from tests.support.builders import chains

ROUTER_PATH_HEADER = "x-router-path"
USER_HEADER = "X-Example-Ext"

# The connection manager's path settings. "eg": what Envoy Gateway emits by default (300 of
# the corpus' 339 HTTP managers; tests/test_route_corpus.py checks it);
# "eg-forward": a ClientTrafficPolicy's `path: {escapedSlashesAction: UnescapeAndForward,
# disableMergeSlashes: true}` (the corpus' xds-ir--path-settings); "none": Envoy's own
# defaults, nothing normalised.
NORMALISATION: dict[str, dict[str, Any]] = {
    "eg": {
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT",
    },
    "eg-forward": {
        "normalize_path": True,
        "merge_slashes": False,
        "path_with_escaped_slashes_action": "UNESCAPE_AND_FORWARD",
    },
    "none": {
        "normalize_path": None,
        "merge_slashes": False,
        "path_with_escaped_slashes_action": "IMPLEMENTATION_SPECIFIC_DEFAULT",
    },
}


def virtual_host(
    name: str, domains: Sequence[str], cluster: str, gateway: GatewayListener | None = None
) -> Any:
    """A virtual host sending every path to `cluster`, with Envoy Gateway's metadata naming
    `gateway` when given."""
    host = route_components_pb2.VirtualHost(name=name, domains=list(domains))
    route = host.routes.add(name=f"{name}/all")
    route.match.prefix = "/"
    route.route.cluster = cluster
    added = route.request_headers_to_add.add()
    added.header.key = ROUTER_PATH_HEADER
    added.header.value = "%REQ(:PATH)%"
    added.append_action = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    if gateway is not None:
        origin = {"kind": "Gateway", "namespace": gateway.namespace, "name": gateway.name}
        if gateway.section is not None:
            origin["sectionName"] = gateway.section
        metadata = struct_pb2.Struct()
        metadata.update({"resources": [origin]})
        host.metadata.filter_metadata["envoy-gateway"].CopyFrom(metadata)
    return host


def eg_listener(
    name: str,
    port: int,
    cluster: str,
    hosts: Sequence[Any] = (),
    normalisation: str = "eg",
    routes: Any | None = None,
) -> Any:
    """Envoy Gateway's plain-HTTP listener on 127.0.0.1:`port`, its routes inline:
    `routes` (a RouteConfiguration) or these virtual hosts (default: one for every host)."""
    if routes is None:
        routes = route_pb2.RouteConfiguration(
            name=name, virtual_hosts=list(hosts) or [virtual_host("all", ["*"], cluster)]
        )
    settings = NORMALISATION[normalisation]
    Escaped = hcm_pb2.HttpConnectionManager.PathWithEscapedSlashesAction

    def configure(manager: Any) -> None:
        manager.route_config.CopyFrom(routes)
        manager.ClearField("normalize_path")
        if settings["normalize_path"] is not None:
            manager.normalize_path.CopyFrom(
                wrappers_pb2.BoolValue(value=settings["normalize_path"])
            )
        manager.merge_slashes = settings["merge_slashes"]
        manager.path_with_escaped_slashes_action = Escaped.Value(
            settings["path_with_escaped_slashes_action"]
        )

    return edit_managers(eg_http_listener(name, port, cluster), configure)


def edit_managers(listener: Any, change: Callable[[Any], None]) -> Any:
    """Apply `change` to every HTTP connection manager of `listener` (in place); the listener."""
    for chain in chains(listener):
        for network_filter in chain.filters:
            manager = hcm_pb2.HttpConnectionManager()
            if network_filter.typed_config.Unpack(manager):
                change(manager)
                network_filter.typed_config.Pack(manager, deterministic=True)
    return listener


def protect(
    listener: Any,
    users: str,
    *,
    exemptions: Sequence[Exemption] = (),
    per_gateway: Mapping[GatewayListener, Sequence[Exemption]] | None = None,
    hide: bool | Iterable[GatewayListener] = False,
    header: str = USER_HEADER,
) -> Any:
    """The listener as the product's `apply` protects it: our filter (table `users`) in
    every HTTP manager, skipped for the exemptions, with the username guard where anything
    is exempt and the credential remover when `hide` (True: the whole chain; Gateway
    listeners: only on theirs)."""
    auth = ChainAuth(
        users,
        header,
        exemptions=tuple(exemptions),
        per_gateway=tuple((gl, tuple(found)) for gl, found in (per_gateway or {}).items()),
        hide_credentials=hide is True,
        hide_on=() if isinstance(hide, bool) else tuple(hide),
    )
    protected, _report = apply(listener, lambda _name, _default: auth)
    return protected


@dataclass(frozen=True)
class Answer:
    """Envoy's answer: the status, the echo backend's view of the request (None when the
    request did not reach it), and the response headers (lower-case names)."""

    status: int | None
    echoed: dict[str, Any] | None
    headers: dict[str, str]

    @property
    def router_path(self) -> str | None:
        """`:path` as the router saw it, when the request reached the backend."""
        if self.echoed is None:
            return None
        seen = self.echoed["headers"].get(ROUTER_PATH_HEADER.title())
        return None if seen is None else str(seen[0])

    def backend_header(self, name: str) -> list[str] | None:
        """A request header as the backend received it (None: absent)."""
        if self.echoed is None:
            return None
        found = self.echoed["headers"].get(name)
        return None if found is None else list(found)


def send(
    port: int,
    target: bytes | str,
    *,
    method: str = "GET",
    host: str = "www.example.com",
    headers: Iterable[tuple[str, str]] = (),
    timeout: float = 5.0,
) -> Answer:
    """One HTTP/1.1 request with this request target, byte for byte, on a new connection."""
    raw_target = target.encode() if isinstance(target, str) else target
    lines = [f"{method} ".encode() + raw_target + b" HTTP/1.1", f"Host: {host}".encode()]
    lines += [f"{name}: {value}".encode() for name, value in headers]
    request = b"\r\n".join([*lines, b"Connection: close", b"", b""])
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(request)
        received = _read_response(connection, head_only=method == "HEAD")
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ")
    status = int(parts[1]) if status_line.startswith("HTTP/") and len(parts) > 1 else None
    answer_headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        answer_headers[name.strip().lower()] = value.strip()
    echoed = None
    if answer_headers.get("content-type") == "application/json" and body:
        echoed = json.loads(body)
    return Answer(status, echoed, answer_headers)


def _read_response(connection: socket.socket, *, head_only: bool) -> bytes:
    """The response, read up to the end of its body (by Content-Length), or to the close.

    Not waiting for the close matters: Envoy keeps a closing connection open up to its
    delayed-close timeout.
    """
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = connection.recv(65536)
        if not chunk:
            return received
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if head_only:
        length = 0
    while length is None or len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body
