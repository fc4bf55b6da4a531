"""Each Gateway's users on its own virtual hosts (the Translation hook).

Given a route configuration as Envoy Gateway emits it, with merged Gateways' virtual hosts
side by side, each virtual host gets our filter's per-route users: the table of its own
Gateway listener, or a table that admits nobody (or, with passthrough, our filter
disabled). Nothing else changes. Then the whole translation (`compile_translation`): which
policies each listener and virtual host gets, both hooks at once, and the size limit.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.basic_auth.v3 import basic_auth_pb2
from google.protobuf import struct_pb2

from backends import CredentialResolver
from compiler.errors import TooLargeError
from compiler.htpasswd import parse_like_envoy
from compiler.listener import FILTER_NAME
from compiler.model import CompileOptions, UnprotectedMode
from compiler.pipeline import load_policies
from compiler.routes import NOBODY, with_gateway_users
from compiler.translation import TranslationResult, compile_translation
from compiler.virtual_hosts import GatewayListener, gateway_of
from tests.support.builders import http_listener, policy
from tests.support.compile import admitted, hook
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


def test_with_passthrough_a_gateway_without_policy_gets_our_filter_disabled_there() -> None:
    """`unprotectedListeners: passthrough`: the virtual hosts of a Gateway listener no
    policy applies to stay open, as its own chain would; a virtual host whose Gateway is
    unknown still admits nobody."""
    result = with_gateway_users(merged_routes(), TABLES.get, open_unprotected=True)

    disabled = route_components_pb2.FilterConfig()
    assert result.virtual_hosts[2].typed_per_filter_config[FILTER_NAME].Unpack(disabled)
    assert disabled == route_components_pb2.FilterConfig(disabled=True)
    others = [host for index, host in enumerate(result.virtual_hosts) if index != 2]
    assert [users_of(host) for host in others] == [TABLES[TEAM_A], TABLES[TEAM_B], *[NOBODY] * 3]


# --- the whole translation: compile_translation -------------------------------------------------

ALICE = policy(
    "alice", "alice", "alice-secret", namespace="team-a",
    targets=[{"kind": "Gateway", "name": "gw", "sectionName": "http"}],
)  # fmt: skip
BOB = policy(
    "bob", "bob", "bob-secret", namespace="team-b", targets=[{"kind": "Gateway", "name": "gw"}]
)


def translate(
    *resources: bytes,
    listener: object | None = None,
    mode: UnprotectedMode = UnprotectedMode.DENY,
    max_bytes: int | None = None,
) -> TranslationResult:
    """team-a's Gateway's plain-HTTP listener, its chain shared with team-b's (merged), and
    the merged route configuration it reads by RDS, through the Translation hook."""
    policies = load_policies(resources, CredentialResolver())
    sent = listener if listener is not None else http_listener(name="team-a/gw/http")
    return compile_translation(
        [sent], [merged_routes()], policies, CompileOptions(unprotected=mode), max_bytes
    )


def test_a_merged_chain_keeps_its_own_namespaces_users_and_each_virtual_host_its_gateways() -> None:
    result = translate(ALICE, BOB)

    (listener,) = result.listeners
    assert admitted(listener) == {"alice"}  # team-b's policy is not applied on team-a's chain
    assert [users_of(host) for host in result.routes[0].virtual_hosts[:3]] == [
        f"alice:{sha('alice-secret')}\n", f"bob:{sha('bob-secret')}\n", NOBODY,
    ]  # fmt: skip


def test_both_hooks_on_at_once_give_the_same_bytes_as_the_translation_hook_alone() -> None:
    """Envoy Gateway runs the HTTPListener hook on each listener first, then hands the
    results to the Translation hook: the outcome is what the Translation hook alone
    makes, and the Translation hook on its own output changes nothing."""
    alone = translate(ALICE, BOB)
    after_listener_hook = hook(ALICE, BOB, listener=http_listener(name="team-a/gw/http"))
    both = translate(ALICE, BOB, listener=after_listener_hook.listener)
    (first,), (second,) = alone.listeners, both.listeners
    wire = lambda message: message.SerializeToString(deterministic=True)  # noqa: E731
    assert wire(second.listener) == wire(first.listener)
    again = compile_translation(
        [first.listener],
        list(alone.routes),
        load_policies([ALICE, BOB], CredentialResolver()),
        CompileOptions(),
    )
    assert wire(again.listeners[0].listener) == wire(first.listener)
    assert [wire(r) for r in again.routes] == [wire(r) for r in alone.routes]


def test_with_passthrough_a_chain_only_another_namespace_reaches_still_gets_our_filter() -> None:
    """Only team-b has a policy, on the chain named after team-a's Gateway: the chain needs
    our filter for bob's virtual hosts to ask for credentials, while team-a's stay open."""
    result = translate(BOB, mode=UnprotectedMode.PASSTHROUGH)

    (listener,) = result.listeners
    assert admitted(listener) == set()  # the filter is there; the chain's own table is empty
    hosts = result.routes[0].virtual_hosts
    disabled = route_components_pb2.FilterConfig()
    assert hosts[0].typed_per_filter_config[FILTER_NAME].Unpack(disabled) and disabled.disabled
    assert users_of(hosts[1]) == f"bob:{sha('bob-secret')}\n"


def test_a_translation_too_large_leaves_out_the_policy_that_adds_the_most() -> None:
    many = policy(
        "many", "b" * 120, "many-secret", namespace="team-b",
        targets=[{"kind": "Gateway", "name": "gw"}],
    )  # fmt: skip
    whole = translate(ALICE, many)
    result = translate(ALICE, many, max_bytes=whole.size - 1)

    (left_out,) = [item for item in result.policies.resolved if item.error is not None]
    assert left_out.policy.ref.name == "many"
    assert isinstance(left_out.error, TooLargeError)
    assert result.size <= whole.size - 1
    assert users_of(result.routes[0].virtual_hosts[0]) == f"alice:{sha('alice-secret')}\n"
    assert parse_like_envoy(users_of(result.routes[0].virtual_hosts[1])) == {}  # bob's: nobody
