"""The compiler, as a user meets it: given these policies and this listener, Envoy gets this.

No I/O here beyond the plaintext backend; every listener is built in code (tests/support/builders.py).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from backends import CredentialResolver
from compiler.errors import (
    ConflictError,
    InvalidHeaderError,
    InvalidPasswordError,
    InvalidUsernameError,
    MalformedPolicyError,
    PolicyError,
    UnsupportedHashError,
)
from compiler.htpasswd import (
    DENY_ALL,
    EnvoyWouldReject,
    parse_like_envoy,
    reference_render,
    reference_sha_hash,
    render,
    sha_hash,
    sha_hashes,
)
from compiler.listener import FILTER_NAME
from compiler.model import (
    CredentialKind,
    Credentials,
    Secret,
    Secrets,
    UnprotectedMode,
)
from compiler.pipeline import ListenerCompiler, ListenerResult, load_policies
from compiler.users import Resolved, compile_users
from tests.support.builders import (
    eg_security_filters,
    filter_names,
    http_listener,
    https_listener,
    manager,
    managers,
    our_filter,
    policy,
    tcp_proxy,
)
from tests.support.compile import hook, users_of
from tests.support.hostile_names import HOSTILE_USERNAMES

SEED_LINE = "user:{SHA}V7KtmQRNM3GXwMOf04I1aP+B5Io=\n"


# --- The seed's story -----------------------------------------------------------------


def test_no_policy_gives_a_filter_that_admits_nobody() -> None:
    result = hook()
    (hcm,) = managers(result.listener)
    config = our_filter(hcm)
    assert config.users.inline_string == DENY_ALL
    assert parse_like_envoy(DENY_ALL) == {}
    assert config.forward_username_header == "X-Example-Ext"
    assert result.errors == ()


def test_seed_policy_admits_user_with_sha_hash_and_forwards_the_name() -> None:
    result = hook(policy())
    (hcm,) = managers(result.listener)
    config = our_filter(hcm)
    assert config.users.inline_string == SEED_LINE
    assert config.forward_username_header == "X-Example-Ext"
    assert filter_names(hcm) == [FILTER_NAME, "envoy.filters.http.router"]
    assert result.users == 1


def test_policy_may_choose_the_forwarded_header() -> None:
    result = hook(policy(header="X-Authenticated-User"))
    (hcm,) = managers(result.listener)
    assert our_filter(hcm).forward_username_header == "X-Authenticated-User"


def test_same_policies_in_any_order_give_identical_bytes() -> None:
    policies = [policy(f"p{i}", f"user{i}", f"pw{i}") for i in range(20)]
    first = hook(*policies).listener.SerializeToString(deterministic=True)
    second = hook(*reversed(policies)).listener.SerializeToString(deterministic=True)
    assert first == second
    lines = users_of(hook(*policies))
    assert list(lines) == sorted(lines)


def test_running_the_hook_on_its_own_output_changes_nothing() -> None:
    listener = http_listener(*eg_security_filters())
    once = hook(policy(), policy("other", "alice", "s3cret"), listener=listener).listener
    twice = hook(policy(), policy("other", "alice", "s3cret"), listener=once).listener
    assert once.SerializeToString(deterministic=True) == twice.SerializeToString(deterministic=True)


def test_the_input_listener_is_not_modified() -> None:
    listener = http_listener()
    before = listener.SerializeToString(deterministic=True)
    hook(policy(), listener=listener)
    assert listener.SerializeToString(deterministic=True) == before


# --- Bad input: a clear error, and nothing else lost --------------------------------------


@pytest.mark.parametrize("username", HOSTILE_USERNAMES.values(), ids=HOSTILE_USERNAMES.keys())
def test_hostile_user_name_is_rejected_and_others_still_apply(username: str) -> None:
    result = hook(policy("hostile", username, "pw"), policy())
    assert users_of(result) == parse_like_envoy(SEED_LINE)
    (error,) = result.errors
    assert isinstance(error, InvalidUsernameError)
    assert error.policy.namespace == "default" and error.policy.name == "hostile"
    assert error.field == "spec.username"
    assert "default/hostile" in str(error) and "spec.username" in str(error)


@pytest.mark.parametrize("username", ["jürgen", "ユーザー", "user.name@example.com", "a b", "x#y"])
def test_printable_unicode_user_names_are_accepted(username: str) -> None:
    result = hook(policy(username=username))
    assert list(users_of(result)) == [username]
    assert result.errors == ()


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("", "is empty"),
        ("pass\nword", "control character"),
        ("\x00", "control character"),
        ("p" * 4097, "longer than 4096 bytes"),
    ],
    ids=["empty", "newline", "NUL", "too long"],
)
def test_unusable_password_is_rejected_without_quoting_it(password: str, problem: str) -> None:
    result = hook(policy("weak", "bob", password), policy())
    (error,) = result.errors
    assert isinstance(error, InvalidPasswordError)
    assert error.field == "spec.password"
    assert problem in str(error) and "default/weak" in str(error)
    if password:
        assert password not in str(error) and password not in repr(error)
    assert list(users_of(result)) == ["user"]


def from_store(users: dict[str, str]) -> Resolved:
    """What the resolver makes of a `usersFrom` secret: the users as one column."""
    (resolved,) = load_policies([policy()], CredentialResolver()).resolved
    names, values = tuple(users), Secrets(tuple(users.values()))
    return Resolved(
        resolved.policy, Credentials(names, values, FIELD, FIELD, CredentialKind.STORED)
    )


FIELD = "spec.usersFrom"
BCRYPT = "$2y$05$bvIG6Nmid91Mu9RcmmWZfO5HJIMCT8riNW0hEp8f6/FuA2/mHZFpe"


@pytest.mark.parametrize("username", HOSTILE_USERNAMES.values(), ids=HOSTILE_USERNAMES.keys())
def test_a_hostile_name_among_many_stored_users_loses_only_itself(username: str) -> None:
    table = compile_users([from_store({"alice": "pw-a", username: "pw-x", "bob": "pw-b"})])
    assert list(parse_like_envoy(table.htpasswd)) == ["alice", "bob"]
    (error,) = table.errors
    assert isinstance(error, InvalidUsernameError) and error.field == FIELD


@pytest.mark.parametrize(
    ("value", "error_type"),
    [
        ("", InvalidPasswordError),
        ("pw\nx", InvalidPasswordError),
        ("pw\x00", InvalidPasswordError),
        ("p" * 4097, InvalidPasswordError),
        (BCRYPT, UnsupportedHashError),
        ("{SHA}not-a-hash", UnsupportedHashError),
    ],
    ids=["empty", "newline", "NUL", "too long", "bcrypt", "broken {SHA}"],
)
def test_an_unusable_stored_value_among_many_loses_only_its_user(
    value: str, error_type: type[PolicyError]
) -> None:
    table = compile_users([from_store({"alice": "pw-a", "mallory": value, "bob": "pw-b"})])
    assert list(parse_like_envoy(table.htpasswd)) == ["alice", "bob"]
    (error,) = table.errors
    assert isinstance(error, error_type) and "mallory" in str(error)
    assert not value[1:] or value[1:] not in str(error)  # the value is never quoted


def test_stored_sha_hashes_are_used_as_is_beside_plain_passwords() -> None:
    seed_hash = SEED_LINE.split(":", 1)[1].strip()
    table = compile_users([from_store({"user": seed_hash, "bob": "pw-b"})])
    assert parse_like_envoy(table.htpasswd) == {"bob": sha_hash(Secret("pw-b")), "user": seed_hash}
    assert table.errors == ()


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"{not json", "unstructured_bytes"),
        (b"\xff\xfe", "unstructured_bytes"),
        (b"[1, 2]", "unstructured_bytes"),
        (b'"a string"', "unstructured_bytes"),
        (
            json.dumps(
                {"apiVersion": "example.extensions.io/v1alpha1", "kind": "ListenerContextExample"}
            ).encode(),
            "metadata",
        ),
        (policy(username=7), "spec.username"),
        (policy(password=None), "spec"),
        (policy(targets="eg"), "spec.targetRefs"),  # type: ignore[arg-type]
        (policy(passwrd="typo"), "spec.passwrd"),
        (policy(header=""), "spec.forwardUsernameHeader"),
        (policy(header="Bad Header"), "spec.forwardUsernameHeader"),
        (policy(header="Authorization"), "spec.forwardUsernameHeader"),
        (policy(namespace="Not_A_Namespace"), "metadata.namespace"),
    ],
    ids=[
        "truncated",
        "not utf-8",
        "array",
        "string",
        "no metadata",
        "username type",
        "no password",
        "targetRefs type",
        "unknown field",
        "empty header",
        "header with space",
        "reserved header",
        "bad namespace",
    ],
)
def test_malformed_policy_is_reported_by_field_and_the_listener_stays_protected(
    raw: bytes, field: str
) -> None:
    result = hook(raw, policy("good", "alice", "pw"))
    (error,) = result.errors
    assert isinstance(error, MalformedPolicyError | InvalidHeaderError)
    assert error.field == field
    assert list(users_of(result)) == ["alice"]


def test_wrong_version_of_our_kind_is_rejected() -> None:
    raw = policy().replace(b"v1alpha1", b"v2")
    result = hook(raw)
    (error,) = result.errors
    assert error.field == "apiVersion"
    assert users_of(result) == {}


def test_other_kinds_are_ignored_and_count_as_no_policy() -> None:
    config_map = json.dumps(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    ).encode()
    result = hook(config_map, mode=UnprotectedMode.PASSTHROUGH)
    assert [str(ignored.ref) for ignored in result.policies.ignored] == ["default/x"]
    assert managers(result.listener)[0].http_filters[0].name == "envoy.filters.http.router"


def test_only_broken_policies_still_protect_the_listener_in_passthrough_mode() -> None:
    result = hook(b"{broken", mode=UnprotectedMode.PASSTHROUGH)
    (hcm,) = managers(result.listener)
    assert our_filter(hcm).users.inline_string == DENY_ALL


# --- Conflicts --------------------------------------------------------------------------


def test_same_user_in_two_policies_the_oldest_wins() -> None:
    older = policy("older", "user", "first-password", created="2024-01-01T00:00:00Z")
    newer = policy("a-newer", "user", "second-password", created="2024-06-01T00:00:00Z")
    result = hook(newer, older)
    (error,) = result.errors
    assert isinstance(error, ConflictError)
    assert error.policy.name == "a-newer" and "default/older" in str(error)
    (hcm,) = managers(result.listener)
    assert our_filter(hcm).users.inline_string.count("user:") == 1
    # the winner's password is the one Envoy checks
    first = hook(older).listener
    assert our_filter(managers(first)[0]).users == our_filter(hcm).users


def test_same_age_conflict_is_settled_by_namespace_then_name() -> None:
    result = hook(policy("b", "user", "x"), policy("a", "user", "y"))
    (error,) = result.errors
    assert error.policy.name == "b"
    result = hook(  # on a chain named after no Gateway: every namespace's policy applies
        policy("a", "user", "y", namespace="team-b"), policy("z", "user", "x", namespace="team-a")
    )
    (error,) = result.errors
    assert str(error.policy) == "team-b/a"


def test_merged_gateways_another_namespaces_policy_is_not_applied_on_a_shared_chain() -> None:
    """Merged Gateways share one plain-HTTP default chain, named after the first Gateway's
    listener: a listener-level filter cannot tell the other Gateway's routes from this
    one's, so another namespace's policy is left off that chain (never admitting more)."""
    shared = http_listener(name="team-a/gateway-a/http")
    own = [{"kind": "Gateway", "name": "gateway-a"}]
    theirs = [{"kind": "Gateway", "name": "gateway-b"}]
    result = hook(
        policy("a", "alice", "alice-pw", namespace="team-a", targets=own),
        policy("b", "bob", "bob-pw", namespace="team-b", targets=theirs),
        listener=shared,
    )
    assert list(users_of(result)) == ["alice"]
    assert [str(ref) for ref in result.other_namespace] == ["team-b/b"]
    assert result.applies_to_nothing == ()  # reported once, as what it is
    assert result.errors == ()


def test_policy_without_creation_time_ranks_after_one_with_it() -> None:
    result = hook(
        policy("a", "user", "x"), policy("z", "user", "y", created="2030-01-01T00:00:00Z")
    )
    (error,) = result.errors
    assert error.policy.name == "a"


def test_header_disagreement_keeps_the_older_header_and_both_users() -> None:
    older = policy("older", "alice", "x", header="X-User", created="2024-01-01T00:00:00Z")
    newer = policy("newer", "bob", "y", header="X-Other", created="2024-02-01T00:00:00Z")
    result = hook(newer, older)
    (error,) = result.errors
    assert isinstance(error, ConflictError) and error.field == "spec.forwardUsernameHeader"
    (hcm,) = managers(result.listener)
    assert our_filter(hcm).forward_username_header == "X-User"
    assert sorted(users_of(result)) == ["alice", "bob"]


# --- Where the filter goes --------------------------------------------------------------


def test_filter_sits_at_envoy_gateways_basic_auth_rank() -> None:
    result = hook(policy(), listener=http_listener(*eg_security_filters()))
    (hcm,) = managers(result.listener)
    assert filter_names(hcm) == [
        "envoy.filters.http.health_check",
        "envoy.filters.http.cors",
        "envoy.filters.http.ext_authz/securitypolicy/default/a",
        FILTER_NAME,
        "envoy.filters.http.basic_auth/securitypolicy/default/sp",
        "envoy.filters.http.oauth2/securitypolicy/default/o",
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.rbac",
        "envoy.filters.http.router",
    ]


def test_envoy_gateways_own_basic_auth_filters_are_left_exactly_as_they_were() -> None:
    listener = http_listener(*eg_security_filters())
    before = {
        f.name: f.SerializeToString(deterministic=True) for f in managers(listener)[0].http_filters
    }
    (hcm,) = managers(hook(policy(), listener=listener).listener)
    after = {f.name: f.SerializeToString(deterministic=True) for f in hcm.http_filters}
    del after[FILTER_NAME]
    assert after == before


def test_filters_of_unknown_type_pass_through_byte_for_byte() -> None:
    unknown = hcm_pb2.HttpFilter(name="vendor.custom")
    unknown.typed_config.type_url = "type.googleapis.com/vendor.v9.NotInThisBuild"
    unknown.typed_config.value = b"\x0a\x03abc\x98\x01\x07"
    (hcm,) = managers(hook(policy(), listener=http_listener(unknown)).listener)
    assert filter_names(hcm) == ["vendor.custom", FILTER_NAME, "envoy.filters.http.router"]
    assert hcm.http_filters[0].SerializeToString() == unknown.SerializeToString()


def test_manager_is_found_by_type_whatever_its_name() -> None:
    listener = listener_pb2.Listener(name="renamed")
    listener.default_filter_chain.filters.append(manager(name="my-own-hcm-name"))
    (hcm,) = managers(hook(policy(), listener=listener).listener)
    assert our_filter(hcm).users.inline_string == SEED_LINE


def test_every_chain_with_a_manager_is_protected_and_tcp_chains_are_untouched() -> None:
    listener = https_listener("https-a", "https-b")
    tcp_chain = listener.filter_chains.add(name="tcproute/default/db")
    tcp_chain.filters.append(tcp_proxy())
    listener.default_filter_chain.filters.append(manager())
    before_tcp = tcp_chain.SerializeToString(deterministic=True)
    result = hook(policy(), listener=listener)
    assert len(managers(result.listener)) == 3
    for hcm in managers(result.listener):
        our_filter(hcm)
    assert result.listener.filter_chains[2].SerializeToString(deterministic=True) == before_tcp
    assert result.report.managers_protected == 3


def test_http3_quic_listener_is_protected() -> None:
    listener = https_listener("https")
    listener.udp_listener_config.quic_options.SetInParent()
    listener.address.socket_address.protocol = listener.address.socket_address.UDP
    (hcm,) = managers(hook(policy(), listener=listener).listener)
    assert our_filter(hcm).users.inline_string == SEED_LINE


def test_listener_without_filter_chains_comes_back_unchanged() -> None:
    listener = listener_pb2.Listener(name="empty")
    assert hook(policy(), listener=listener).listener == listener


def test_websocket_upgrade_with_its_own_filters_authenticates_too() -> None:
    listener = http_listener()
    hcm = managers(listener)[0]
    upgrade = hcm.upgrade_configs.add(upgrade_type="websocket")
    upgrade.filters.append(hcm.http_filters[0])
    listener.default_filter_chain.filters[0].typed_config.Pack(hcm)
    (out,) = managers(hook(policy(), listener=listener).listener)
    assert [f.name for f in out.upgrade_configs[0].filters] == [
        FILTER_NAME,
        "envoy.filters.http.router",
    ]


def test_undecodable_manager_is_left_alone_and_reported() -> None:
    listener = http_listener()
    listener.default_filter_chain.filters[0].typed_config.value = b"\xff\xff\xff"
    result = hook(policy(), listener=listener)
    assert result.listener == listener
    assert result.report.undecodable == ["default/eg/http"]


# --- Which policies apply where ---------------------------------------------------------


def test_section_policy_applies_to_its_own_https_chain_only() -> None:
    listener = https_listener("admin", "public")
    admin_only = policy(
        "admin", "root", "x", targets=[{"kind": "Gateway", "name": "eg", "sectionName": "admin"}]
    )
    whole_gateway = policy("all", "alice", "y")
    result = hook(admin_only, whole_gateway, listener=listener)
    admin, public = managers(result.listener)
    assert sorted(parse_like_envoy(our_filter(admin).users.inline_string)) == ["alice", "root"]
    assert sorted(parse_like_envoy(our_filter(public).users.inline_string)) == ["alice"]


def test_chain_of_a_gateway_no_policy_targets_admits_nobody() -> None:
    listener = https_listener("https", gateway="default/other")
    (hcm,) = managers(hook(policy(), listener=listener).listener)
    assert our_filter(hcm).users.inline_string == DENY_ALL


def test_plain_http_sections_share_the_default_chain_so_all_policies_apply() -> None:
    section = policy(
        "a", "root", "x", targets=[{"kind": "Gateway", "name": "eg", "sectionName": "http"}]
    )
    other = policy(
        "b", "alice", "x", targets=[{"kind": "Gateway", "name": "eg", "sectionName": "http-2"}]
    )
    assert sorted(users_of(hook(section, other))) == ["alice", "root"]


def test_passthrough_leaves_unprotected_listeners_unchanged_and_still_protects_the_others() -> None:
    listener = http_listener()
    assert hook(listener=listener, mode=UnprotectedMode.PASSTHROUGH).listener == listener
    assert users_of(
        hook(policy(), listener=listener, mode=UnprotectedMode.PASSTHROUGH)
    ) == parse_like_envoy(SEED_LINE)


# --- Envoy's htpasswd rules, as the compiler checks them --------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nocolon\n",
        ":{SHA}V7KtmQRNM3GXwMOf04I1aP+B5Io=\n",
        "user:\n",
        "user:$apr1$abc\n",
        "user:{SHA}short\n",
        SEED_LINE + SEED_LINE,
    ],
    ids=["empty", "no colon", "empty name", "empty hash", "apr1", "short sha", "duplicate"],
)
def test_envoy_rules_reject_what_envoy_rejects(text: str) -> None:
    with pytest.raises(EnvoyWouldReject) as caught:
        parse_like_envoy(text)
    assert "V7KtmQRNM3GXwMOf04I1aP" not in str(caught.value)


def test_envoy_rules_skip_comments_and_blank_lines() -> None:
    assert parse_like_envoy("# comment\n\n" + SEED_LINE) == {"user": SEED_LINE[5:-1]}


def test_the_fast_sha_and_render_give_libpass_s_bytes_exactly() -> None:
    passwords = ["p@ssw0rd", "ünïcödé", "ユーザー", " spaced ", "x" * 4096, "\u20ac"]
    for password in passwords:
        assert sha_hash(Secret(password)) == reference_sha_hash(Secret(password))
    hashes = {
        name: sha_hash(Secret(name + "-pw"))
        for name in ["zed", "alice", "jürgen", "ユーザー", "a b", "x#y"]
    }
    assert render(hashes) == reference_render(hashes)
    assert render({}) == reference_render({})
    column = [name + "-pw" for name in hashes]
    assert sha_hashes(column) == [reference_sha_hash(Secret(value)) for value in column]


def test_an_unchanged_call_reuses_the_previous_result_and_a_change_does_not() -> None:
    compiler = ListenerCompiler(CredentialResolver())
    listener = http_listener()

    def call(*resources: bytes) -> ListenerResult:
        return compiler.compile(listener, compiler.resolve(compiler.parse(resources)), None)

    first = call(policy(), policy("other", "alice", "alice-pw-1"))
    again = call(policy(), policy("other", "alice", "alice-pw-1"))
    assert again.listener is first.listener  # nothing changed: nothing recompiled
    changed = call(policy(), policy("other", "alice", "alice-pw-2"))
    assert changed.listener is not first.listener
    assert users_of(changed)["alice"] != users_of(first)["alice"]
    other = compiler.compile(
        http_listener(name="default/eg/other"), compiler.resolve(compiler.parse([policy()])), None
    )
    assert other.listener.name == "default/eg/other"


def test_equal_policies_in_new_bytes_reuse_the_result_by_value() -> None:
    """Envoy Gateway's copy of a policy changes with its metadata (resourceVersion, managed
    fields): the value is the same, so is the answer; nothing hangs on which object it is."""
    compiler = ListenerCompiler(CredentialResolver())
    listener = http_listener()
    plain = json.loads(policy())
    noisy = {**plain, "metadata": {**plain["metadata"], "resourceVersion": "42", "uid": "u-1"}}
    first = compiler.compile(listener, compiler.resolve(compiler.parse([policy()])), None)
    again = compiler.compile(
        listener, compiler.resolve(compiler.parse([json.dumps(noisy).encode()])), None
    )
    assert again.listener is first.listener


# --- A policy that protects nothing on the listener is a finding, not an error ----------------


def test_a_policy_whose_target_matches_no_chain_is_reported_as_applying_to_nothing() -> None:
    listener = https_listener("https", gateway="envoy-gateway/gateway-1")
    own = [{"kind": "Gateway", "name": "gateway-1"}]
    mine = policy("mine", "alice", "alice-pw", namespace="envoy-gateway", targets=own)
    result = hook(policy(), mine, listener=listener)
    assert [str(ref) for ref in result.applies_to_nothing] == ["default/listeneruser"]
    assert result.errors == ()  # the call still succeeds; the finding changes nothing


def test_a_section_the_listener_does_not_carry_is_reported() -> None:
    admin = [{"kind": "Gateway", "name": "eg", "sectionName": "admin"}]
    result = hook(policy("admin", "root", "x", targets=admin), listener=https_listener("public"))
    assert [str(ref) for ref in result.applies_to_nothing] == ["default/admin"]


def test_policies_that_apply_somewhere_are_not_reported() -> None:
    assert hook(policy()).applies_to_nothing == ()
    assert hook(policy(), listener=https_listener("admin", "public")).applies_to_nothing == ()


def test_a_listener_without_http_managers_reports_nothing() -> None:
    # A Gateway's TCP listener gets the Gateway's policies too: nothing there to protect.
    listener = listener_pb2.Listener(name="default/eg/tcp")
    listener.filter_chains.add(name="default/eg/tcp").filters.append(tcp_proxy())
    assert hook(policy(), listener=listener).applies_to_nothing == ()


def test_a_malformed_policy_is_reported_as_rejected_only() -> None:
    other_gateway = [{"kind": "Gateway", "name": "other"}]
    bad = policy("bad", targets=other_gateway, typo="x")
    result = hook(bad, listener=https_listener("https"))
    assert [type(error) for error in result.errors] == [MalformedPolicyError]
    assert result.applies_to_nothing == ()


# --- Envoy Gateway's custom filter order (EnvoyProxy spec.filterOrder) ------------------------


def custom_order_filters(first: str) -> list[Any]:
    """The HTTP filters of the corpus's custom-filter-order listener, `first` moved first."""
    eg_basic = [f for f in eg_security_filters() if "basic_auth" in f.name]
    jwt = [f for f in eg_security_filters() if f.name == "envoy.filters.http.jwt_authn"]
    cors = [f for f in eg_security_filters() if f.name == "envoy.filters.http.cors"]
    wasm = hcm_pb2.HttpFilter(name="envoy.filters.http.wasm/envoyextensionpolicy/default/p/0")
    wasm.typed_config.type_url = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
    ordered = [*eg_basic, *cors, wasm, *jwt]
    moved = [f for f in ordered if first in f.name]
    return moved + [f for f in ordered if first not in f.name]


def test_with_a_custom_order_our_filter_goes_just_before_envoy_gateways_basic_auth() -> None:
    (hcm,) = managers(
        hook(policy(), listener=http_listener(*custom_order_filters("basic_auth"))).listener
    )
    assert filter_names(hcm) == [
        FILTER_NAME,
        "envoy.filters.http.basic_auth/securitypolicy/default/sp",
        "envoy.filters.http.cors",
        "envoy.filters.http.wasm/envoyextensionpolicy/default/p/0",
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.router",
    ]


def test_with_a_custom_order_a_later_ranked_filter_moved_up_takes_ours_with_it() -> None:
    (hcm,) = managers(
        hook(policy(), listener=http_listener(*custom_order_filters("jwt_authn"))).listener
    )
    assert filter_names(hcm)[:2] == [FILTER_NAME, "envoy.filters.http.jwt_authn"]


def test_the_corpus_custom_filter_order_listener_gets_ours_before_envoy_gateways() -> None:
    from server.envoy_json import listener_from_dict  # noqa: PLC0415 (imports all of xds)
    from server.manifests import read_listeners  # noqa: PLC0415
    from tests.support.corpus import require_corpus  # noqa: PLC0415

    path = require_corpus() / "xds-ir--custom-filter-order.yaml"
    (data,) = read_listeners(path)
    (hcm,) = managers(hook(policy(), listener=listener_from_dict(data)).listener)
    names = filter_names(hcm)
    assert names[:3] == [
        FILTER_NAME,
        "envoy.filters.http.basic_auth/securitypolicy/envoy-gateway/policy-for-gateway",
        "envoy.filters.http.cors",
    ]
    assert names[-1] == "envoy.filters.http.router"
