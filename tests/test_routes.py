"""Each Gateway's users on its own virtual hosts (the Translation hook's route side).

Given a route configuration as Envoy Gateway emits it, with merged Gateways' virtual hosts
side by side, each virtual host gets our filter's per-route users: the table of its own
Gateway listener, or a table that admits nobody. Nothing else changes.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.basic_auth.v3 import basic_auth_pb2
from google.protobuf import struct_pb2

from compiler.htpasswd import parse_like_envoy
from compiler.listener import FILTER_NAME
from compiler.routes import NOBODY, with_gateway_users
from compiler.virtual_hosts import GatewayListener, gateway_of
from tests.support.request_control import virtual_host
from tests.support.secrets import sha

TEAM_A = GatewayListener("team-a", "gw", "http")
TEAM_B = GatewayListener("team-b", "gw", "http")
TABLES = {TEAM_A: f"alice:{sha('alice-secret')}\n", TEAM_B: f"bob:{sha('bob-secret')}\n"}
UNKNOWN_FIELD = b"\xb8\x3e\x01"  # field 999 (varint 1): a field newer than this build knows


def with_metadata(name: str, resources: object) -> object:
    host = route_components_pb2.VirtualHost(name=name, domains=[f"{name}.example"])
    metadata = struct_pb2.Struct()
    metadata.update({"resources": resources})
    host.metadata.filter_metadata["envoy-gateway"].CopyFrom(metadata)
    return host


def merged_routes() -> object:
    routes = route_pb2.RouteConfiguration(name="default/eg/http", ignore_port_in_host_matching=True)
    routes.virtual_hosts.extend(
        [
            virtual_host("a", ["a.example"], "backend", TEAM_A),
            virtual_host("b", ["b.example"], "backend", TEAM_B),
            virtual_host("c", ["c.example"], "backend", GatewayListener("team-c", "gw", "http")),
            virtual_host("bare", ["*"], "backend"),
            with_metadata("route-first", [{"kind": "HTTPRoute", "namespace": "x", "name": "r"}]),
            with_metadata("not-a-list", {"kind": "Gateway"}),
        ]
    )
    routes.virtual_hosts[0].MergeFromString(UNKNOWN_FIELD)
    return routes


def users_of(host: object) -> str:
    config = basic_auth_pb2.BasicAuthPerRoute()
    assert host.typed_per_filter_config[FILTER_NAME].Unpack(config)  # type: ignore[attr-defined]
    return str(config.users.inline_string)


def test_each_virtual_host_admits_the_users_of_its_own_gateway_listener_only() -> None:
    asked: list[GatewayListener] = []

    def table_for(listener: GatewayListener) -> str | None:
        asked.append(listener)
        return TABLES.get(listener)

    result = with_gateway_users(merged_routes(), table_for)

    assert [users_of(host) for host in result.virtual_hosts] == [
        TABLES[TEAM_A], TABLES[TEAM_B], NOBODY, NOBODY, NOBODY, NOBODY,
    ]  # fmt: skip
    assert asked == [TEAM_A, TEAM_B, GatewayListener("team-c", "gw", "http")]


def test_a_table_that_admits_nobody_is_still_one_envoy_accepts() -> None:
    assert NOBODY and parse_like_envoy(NOBODY) == {}
    result = with_gateway_users(merged_routes(), lambda _listener: "")
    assert {users_of(host) for host in result.virtual_hosts} == {NOBODY}


def test_everything_else_in_the_route_configuration_is_kept() -> None:
    original = merged_routes()
    result = with_gateway_users(original, TABLES.get)

    assert UNKNOWN_FIELD in result.virtual_hosts[0].SerializeToString()
    for host in result.virtual_hosts:
        del host.typed_per_filter_config[FILTER_NAME]
    assert result == original
    assert original.virtual_hosts[0].typed_per_filter_config == {}  # the input is not changed


def test_applied_to_its_own_output_nothing_changes() -> None:
    once = with_gateway_users(merged_routes(), TABLES.get)
    twice = with_gateway_users(once, TABLES.get)
    assert twice.SerializeToString(deterministic=True) == once.SerializeToString(deterministic=True)


def test_the_gateway_of_a_virtual_host_is_read_from_envoy_gateways_metadata() -> None:
    hosts = merged_routes().virtual_hosts
    assert [gateway_of(host) for host in hosts] == [
        TEAM_A, TEAM_B, GatewayListener("team-c", "gw", "http"), None, None, None,
    ]  # fmt: skip
    no_section = with_metadata("n", [{"kind": "Gateway", "namespace": "a", "name": "g"}])
    assert gateway_of(no_section) == GatewayListener("a", "g")
    numbers = with_metadata("n", [{"kind": "Gateway", "namespace": 1, "name": "g"}])
    assert gateway_of(numbers) is None
    assert gateway_of(with_metadata("n", [])) is None
    assert gateway_of(with_metadata("n", ["Gateway"])) is None
