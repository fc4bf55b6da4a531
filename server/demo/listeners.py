"""Listeners shaped like the ones Envoy Gateway emits, but self-contained.

``eg_http_listener`` copies the shape of Envoy Gateway's plain-HTTP listener (see the corpus,
e.g. ``extension-xds-ir--http-route.yaml``): a ``default_filter_chain`` whose one network filter
is an ``http_connection_manager`` with the router as its only HTTP filter. Envoy Gateway would
fetch routes over RDS; here the route table is inline so a file-fed Envoy can serve it alone.
The extension server's hooks see the same structure either way.
"""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import address_pb2, protocol_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2, wrappers_pb2

HCM_FILTER = "envoy.filters.network.http_connection_manager"
ROUTER_FILTER = "envoy.filters.http.router"
VIRTUAL_HOST = "www.example.com"


def _pack(message: Any) -> Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def route_config(name: str, cluster: str) -> Any:
    """One virtual host (``www.example.com``, any domain) sending every path to ``cluster``."""
    return route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=VIRTUAL_HOST,
                domains=["*"],
                routes=[
                    route_components_pb2.Route(
                        name=f"{name}/prefix",
                        match=route_components_pb2.RouteMatch(prefix="/"),
                        route=route_components_pb2.RouteAction(cluster=cluster),
                    )
                ],
            )
        ],
    )


def http_connection_manager(name: str, port: int, cluster: str) -> Any:
    """Envoy Gateway's HTTP connection manager settings, with an inline route table."""
    return hcm_pb2.HttpConnectionManager(
        stat_prefix=f"http-{port}",
        route_config=route_config(name, cluster),
        http_filters=[
            hcm_pb2.HttpFilter(
                name=ROUTER_FILTER,
                typed_config=_pack(router_pb2.Router(suppress_envoy_headers=True)),
            )
        ],
        common_http_protocol_options=protocol_pb2.HttpProtocolOptions(
            headers_with_underscores_action=protocol_pb2.HttpProtocolOptions.REJECT_REQUEST
        ),
        http2_protocol_options=protocol_pb2.Http2ProtocolOptions(
            initial_connection_window_size=wrappers_pb2.UInt32Value(value=1048576),
            initial_stream_window_size=wrappers_pb2.UInt32Value(value=65536),
            max_concurrent_streams=wrappers_pb2.UInt32Value(value=100),
        ),
        merge_slashes=True,
        normalize_path=wrappers_pb2.BoolValue(value=True),
        path_with_escaped_slashes_action=hcm_pb2.HttpConnectionManager.UNESCAPE_AND_REDIRECT,
        server_header_transformation=hcm_pb2.HttpConnectionManager.PASS_THROUGH,
        use_remote_address=wrappers_pb2.BoolValue(value=True),
    )


def eg_http_listener(
    name: str, port: int, cluster: str, filter_chain_name: str | None = None
) -> Any:
    """A plain-HTTP listener on 127.0.0.1:``port`` like Envoy Gateway's, routing to ``cluster``.

    ``filter_chain_name`` defaults to the listener name, as Envoy Gateway names it.
    """
    return listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port)
        ),
        default_filter_chain=listener_components_pb2.FilterChain(
            name=filter_chain_name if filter_chain_name is not None else name,
            filters=[
                listener_components_pb2.Filter(
                    name=HCM_FILTER,
                    typed_config=_pack(http_connection_manager(name, port, cluster)),
                )
            ],
        ),
        max_connections_to_accept_per_socket_event=wrappers_pb2.UInt32Value(value=1),
        per_connection_buffer_limit_bytes=wrappers_pb2.UInt32Value(value=32768),
    )
