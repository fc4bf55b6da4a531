"""What Envoy Gateway sends the hook, built in code: policies as JSON bytes, listeners as protobuf."""

from __future__ import annotations

import json
from typing import Any

from envoy.config.core.v3 import config_source_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.basic_auth.v3 import basic_auth_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.health_check.v3 import health_check_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.http.oauth2.v3 import oauth_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.quic.v3 import quic_transport_pb2
from google.protobuf.wrappers_pb2 import BoolValue

from compiler.listener import FILTER_NAME
from tests.support.secrets import remember


def http_filter(name: str, config: Any) -> Any:
    result = hcm_pb2.HttpFilter(name=name)
    result.typed_config.Pack(config)
    return result


def router() -> Any:
    return http_filter("envoy.filters.http.router", router_pb2.Router())


def manager(*filters: Any, name: str = "envoy.filters.network.http_connection_manager") -> Any:
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix="http", http_filters=[*filters, router()])
    hcm.rds.route_config_name = "default/eg/http"
    hcm.rds.config_source.ads.SetInParent()
    hcm.rds.config_source.resource_api_version = config_source_pb2.V3
    network = listener_components_pb2.Filter(name=name)
    network.typed_config.Pack(hcm)
    return network


def tcp_proxy() -> Any:
    network = listener_components_pb2.Filter(name="envoy.filters.network.tcp_proxy")
    network.typed_config.Pack(tcp_proxy_pb2.TcpProxy(stat_prefix="tcp", cluster="backend"))
    return network


def http_listener(*filters: Any, name: str = "default/eg/http") -> Any:
    """Plain HTTP: every Gateway section shares the default filter chain."""
    listener = listener_pb2.Listener(name=name)
    listener.address.socket_address.address = "0.0.0.0"
    listener.address.socket_address.port_value = 10080
    listener.default_filter_chain.name = name
    listener.default_filter_chain.filters.append(manager(*filters))
    return listener


def https_listener(*sections: str, gateway: str = "default/eg") -> Any:
    """HTTPS: one filter chain per Gateway section, named <namespace>/<gateway>/<section>."""
    listener = listener_pb2.Listener(name=f"{gateway}/https")
    listener.address.socket_address.address = "0.0.0.0"
    listener.address.socket_address.port_value = 10443
    listener.listener_filters.add(name="envoy.filters.listener.tls_inspector").typed_config.Pack(
        tls_inspector_pb2.TlsInspector()
    )
    for section in sections:
        chain = listener.filter_chains.add(name=f"{gateway}/{section}")
        chain.filter_chain_match.server_names.append(f"{section}.example.com")
        chain.filters.append(manager())
    return listener


def eg_security_filters() -> list[Any]:
    """The HTTP filters Envoy Gateway generates for a route with several SecurityPolicies."""
    eg_users = basic_auth_pb2.BasicAuth()
    eg_users.users.inline_string = "eg-user:{SHA}V7KtmQRNM3GXwMOf04I1aP+B5Io=\n"
    eg_basic = http_filter("envoy.filters.http.basic_auth/securitypolicy/default/sp", eg_users)
    eg_basic.disabled = True
    return [
        http_filter(
            "envoy.filters.http.health_check",
            health_check_pb2.HealthCheck(pass_through_mode=BoolValue(value=False)),
        ),
        http_filter("envoy.filters.http.cors", cors_pb2.Cors()),
        http_filter(
            "envoy.filters.http.ext_authz/securitypolicy/default/a", ext_authz_pb2.ExtAuthz()
        ),
        eg_basic,
        http_filter("envoy.filters.http.oauth2/securitypolicy/default/o", oauth_pb2.OAuth2()),
        http_filter("envoy.filters.http.jwt_authn", jwt_pb2.JwtAuthentication()),
        http_filter("envoy.filters.http.rbac", rbac_pb2.RBAC()),
    ]


def chains(listener: Any) -> list[Any]:
    """The listener's filter chains, its default chain last when it has one."""
    found = [*listener.filter_chains]
    if listener.HasField("default_filter_chain"):
        found.append(listener.default_filter_chain)
    return found


def managers(listener: Any) -> list[Any]:
    """Every HTTP connection manager of the listener, decoded."""
    found = []
    for chain in chains(listener):
        for network in chain.filters:
            hcm = hcm_pb2.HttpConnectionManager()
            if network.typed_config.Unpack(hcm):
                found.append(hcm)
    return found


def our_filter(hcm: Any) -> Any:
    """Our basic_auth config in that manager (asserts there is exactly one)."""
    ours = [f for f in hcm.http_filters if f.name == FILTER_NAME]
    assert len(ours) == 1, [f.name for f in hcm.http_filters]
    config = basic_auth_pb2.BasicAuth()
    assert ours[0].typed_config.Unpack(config)
    return config


def our_filter_configs(listener: Any) -> list[Any]:
    """The BasicAuth config of our filter in each HTTP connection manager of `listener`, as
    many as there are (none, or several, where something is wrong)."""
    configs = []
    for hcm in managers(listener):
        for http_filter in hcm.http_filters:
            if http_filter.name == FILTER_NAME:
                config = basic_auth_pb2.BasicAuth()
                assert http_filter.typed_config.Unpack(config)
                configs.append(config)
    return configs


def filter_names(hcm: Any) -> list[str]:
    return [f.name for f in hcm.http_filters]


def policy(
    name: str = "listeneruser",
    username: Any = "user",
    password: Any = "p@ssw0rd",
    namespace: str = "default",
    created: str | None = None,
    *,
    header: str | None = None,
    targets: list[dict[str, str]] | None = None,
    **spec: Any,
) -> bytes:
    """A ListenerContextExample as Envoy Gateway sends it (JSON bytes)."""
    remember(password)
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if created:
        metadata["creationTimestamp"] = created
    body: dict[str, Any] = {
        "targetRefs": targets
        or [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "eg"}],
        "username": username,
        "password": password,
        **spec,
    }
    if header is not None:
        body["forwardUsernameHeader"] = header
    body = {key: value for key, value in body.items() if value is not None}
    return json.dumps(
        {
            "apiVersion": "example.extensions.io/v1alpha1",
            "kind": "ListenerContextExample",
            "metadata": metadata,
            "spec": body,
        }
    ).encode()


def as_http3(listener: Any) -> Any:
    """An HTTPS listener turned into Envoy Gateway's HTTP/3 form: UDP, QUIC options, a QUIC
    transport (ALPN h3) per chain. The managers are left as they are."""
    del listener.listener_filters[:]
    listener.udp_listener_config.quic_options.SetInParent()
    listener.address.socket_address.protocol = listener.address.socket_address.UDP
    for chain in listener.filter_chains:
        quic = quic_transport_pb2.QuicDownstreamTransport()
        tls = quic.downstream_tls_context.common_tls_context
        tls.alpn_protocols.append("h3")
        certificate = tls.tls_certificate_sds_secret_configs.add(name="default/eg-tls")
        certificate.sds_config.ads.SetInParent()
        certificate.sds_config.resource_api_version = config_source_pb2.V3
        chain.transport_socket.name = "envoy.transport_sockets.quic"
        chain.transport_socket.typed_config.Pack(quic)
    return listener
