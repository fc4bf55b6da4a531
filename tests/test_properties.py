"""Properties of the compiler over generated policies and listeners (hypothesis).

The examples in tests/test_compiler.py and the corpus in tests/support/hostile_cases.py show
chosen inputs; here hypothesis makes up the inputs and three promises must hold for all:

- every basic_auth table the compiler emits reads cleanly by Envoy's rules
  (`parse_like_envoy`), every HTTP connection manager gets exactly one, and nobody is in
  it whom some policy did not offer with that very password;
- the output is deterministic: the same input twice, or the same policies in another
  order, give identical bytes;
- the hook applied to its own output changes nothing (idempotence).

Policies mix plain names and passwords with random printable and hostile strings,
targetRefs with and without sectionName, users claimed by several policies, creation
timestamps that tie, unreadable bytes and objects of other kinds. Listeners are built
like tests/support/builders.py: plain HTTP, HTTPS with several chains, HTTP/3, TCP chains, none,
and a manager written as a TypedStruct.
Namespace/name pairs are unique within a call, as Kubernetes guarantees.

The compiler memoizes by identity (compiler/memo.py): each run here gets a resolver of
its own, so its Resolved objects are new and every table and listener is compiled anew.
The settings are fixed (derandomized, no example database) so CI sees the same examples
every run, in a few seconds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from envoy.config.listener.v3 import listener_pb2
from google.protobuf import json_format
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from xds.type.v3 import typed_struct_pb2

from backends import CredentialResolver
from compiler.errors import ConflictError
from compiler.htpasswd import parse_like_envoy
from compiler.listener import FILTER_NAME, HCM_TYPE
from compiler.model import CompileOptions, UnprotectedMode
from compiler.pipeline import compile_listener, load_policies
from tests.support.builders import (
    as_http3,
    eg_security_filters,
    http_listener,
    https_listener,
    managers,
    our_filter,
    tcp_proxy,
)
from tests.support.compile import hook
from tests.support.hostile_checks import check_protected
from tests.support.hostile_names import HOSTILE_USERNAMES
from tests.support.secrets import sha

EXAMPLES = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- Policies ----------------------------------------------------------------------------------

PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
SHARED_NAMES = ["admin", "alice", "bob", "jürgen", "ユーザー"]  # claimed by several policies
USERNAMES = st.one_of(
    st.sampled_from(SHARED_NAMES),
    st.text(PRINTABLE, min_size=1, max_size=12),
    st.text(max_size=12),  # any Unicode: controls, format characters, combining marks
    st.sampled_from(sorted(HOSTILE_USERNAMES.values())),
)
PASSWORDS = st.one_of(
    st.text(PRINTABLE, min_size=1, max_size=16),
    st.text(max_size=16),
    st.sampled_from(["", "p" * 4097, "é" * 2048, "{SHA}V7KtmQRNM3GXwMOf04I1aP+B5Io=", "a\nb"]),
)
NAMESPACES = ["default", "team-a", "team-b"]
SECTIONS = ["http", "s0", "s1", "h3"]
TIMESTAMPS = ["2023-05-05T05:05:05Z", "2024-01-01T00:00:00Z", "2024-06-01T00:00:00Z"]
HEADERS = ["X-User", "x-user", "X-Other", "Authorization", "bad header", ""]
TARGET = st.fixed_dictionaries(
    {"kind": st.just("Gateway"), "name": st.sampled_from(["eg", "other"])},
    optional={
        "sectionName": st.sampled_from(SECTIONS),
        "group": st.just("gateway.networking.k8s.io"),
    },
)
JUNK = st.one_of(
    st.binary(max_size=40),
    st.just(b'{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}}'),
    st.just(b"[]"),
)


@st.composite
def policy_sets(draw: st.DrawFn) -> list[bytes]:
    """Up to eight policies with unique namespace/name, and perhaps some junk among them."""
    resources = []
    for index in range(draw(st.integers(0, 8))):
        metadata: dict[str, Any] = {
            "name": f"{draw(st.sampled_from(['a', 'm', 'z']))}-{index}",
            "namespace": draw(st.sampled_from(NAMESPACES)),
        }
        created = draw(st.none() | st.sampled_from(TIMESTAMPS))
        if created:
            metadata["creationTimestamp"] = created
        spec: dict[str, Any] = {"username": draw(USERNAMES), "password": draw(PASSWORDS)}
        targets = draw(st.none() | st.lists(TARGET, min_size=1, max_size=2))
        if targets is not None:
            spec["targetRefs"] = targets
        header = draw(st.none() | st.sampled_from(HEADERS))
        if header is not None:
            spec["forwardUsernameHeader"] = header
        document = {
            "apiVersion": "example.extensions.io/v1alpha1",
            "kind": "ListenerContextExample",
            "metadata": metadata,
            "spec": spec,
        }
        resources.append(json.dumps(document).encode())
    resources += draw(st.lists(JUNK, max_size=2))
    return resources


def offered(resources: Sequence[bytes]) -> set[tuple[str, str]]:
    """(user, {SHA} hash) of every user name and password any resource names."""
    pairs = set()
    for data in resources:
        try:
            spec = json.loads(data)["spec"]
            pairs.add((spec["username"], sha(spec["password"])))
        except (ValueError, KeyError, TypeError, UnicodeEncodeError):
            continue
    return pairs


# --- Listeners ---------------------------------------------------------------------------------


def as_typed_struct(listener: Any, camel: bool) -> Any:
    """The default chain's manager written as a TypedStruct, as Envoy also accepts it."""
    typed_struct = typed_struct_pb2.TypedStruct(type_url=f"type.googleapis.com/{HCM_TYPE}")
    config = json_format.MessageToDict(managers(listener)[0], preserving_proto_field_name=not camel)
    typed_struct.value.update(config)
    listener.default_filter_chain.filters[0].typed_config.Pack(typed_struct)
    return listener


@st.composite
def listeners(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(["http", "https", "http3", "tcp", "none", "struct"]))
    if kind == "none":
        return listener_pb2.Listener(name="no-chains")
    if kind in ("http", "struct"):
        filters = eg_security_filters() if draw(st.booleans()) else []
        listener = http_listener(*filters)
        if kind == "struct":
            listener = as_typed_struct(listener, camel=draw(st.booleans()))
    else:
        sections = draw(st.lists(st.sampled_from(SECTIONS), min_size=1, max_size=3, unique=True))
        gateway = draw(st.sampled_from(["default/eg", "team-a/eg", "default/other"]))
        listener = https_listener(*sections, gateway=gateway)
        if kind == "http3":
            listener = as_http3(listener)
        elif kind == "tcp":
            del listener.filter_chains[: draw(st.integers(0, len(sections)))]
    for k in range(draw(st.integers(0, 2))):
        listener.filter_chains.add(name=f"tcproute/default/db-{k}").filters.append(tcp_proxy())
    return listener


MODES = st.sampled_from([UnprotectedMode.DENY, UnprotectedMode.PASSTHROUGH])


def serialized(listener: Any) -> bytes:
    return bytes(listener.SerializeToString(deterministic=True))


# --- Properties --------------------------------------------------------------------------------


@EXAMPLES
@given(listener=listeners(), resources=policy_sets(), mode=MODES)
def test_every_emitted_table_reads_as_envoy_reads_it_and_holds_only_offered_users(
    listener: Any, resources: list[bytes], mode: UnprotectedMode
) -> None:
    """Envoy rejects a whole listener for one bad htpasswd line; nobody may be let in unasked."""
    result = hook(*resources, listener=listener, mode=mode)
    allowed = offered(resources)
    if mode is UnprotectedMode.DENY:
        # Every manager, typed or TypedStruct, protected by rank; nothing else changed.
        check_protected(listener, result.listener, allowed)
    found = managers(result.listener)
    assert len(found) == len(managers(listener))
    for hcm in found:
        ours = [f for f in hcm.http_filters if f.name == FILTER_NAME]
        # Fail closed: in deny mode every manager is protected, and so it is in passthrough
        # mode once any policy is broken; passthrough leaves alone only chains no policy
        # applies to.
        if mode is UnprotectedMode.DENY or result.policies.malformed:
            assert len(ours) == 1
        assert len(ours) <= 1
        if ours:
            table = parse_like_envoy(our_filter(hcm).users.inline_string)
            assert set(table.items()) <= allowed


@EXAMPLES
@given(listener=listeners(), resources=policy_sets(), mode=MODES, data=st.data())
def test_the_same_input_in_any_order_gives_the_same_bytes(
    listener: Any, resources: list[bytes], mode: UnprotectedMode, data: st.DataObject
) -> None:
    """Envoy Gateway sends the resources in no promised order; a flapping answer would
    make Envoy drain and rebuild the listener on every translation."""
    first = serialized(hook(*resources, listener=listener, mode=mode).listener)
    assert serialized(hook(*resources, listener=listener, mode=mode).listener) == first
    shuffled = data.draw(st.permutations(resources))
    assert serialized(hook(*shuffled, listener=listener, mode=mode).listener) == first


@EXAMPLES
@given(listener=listeners(), resources=policy_sets(), mode=MODES)
def test_the_hook_applied_to_its_own_output_changes_nothing(
    listener: Any, resources: list[bytes], mode: UnprotectedMode
) -> None:
    """Envoy Gateway may hand back a listener we already rewrote: one filter, same bytes."""
    policies = load_policies(resources, CredentialResolver())
    options = CompileOptions(unprotected=mode)
    once = compile_listener(listener, policies, options).listener
    twice = compile_listener(once, policies, options).listener
    if serialized(once) != serialized(listener):
        assert twice is not once  # a different input: really compiled again
    assert serialized(twice) == serialized(once)
    for hcm in managers(twice):
        assert [f.name for f in hcm.http_filters].count(FILTER_NAME) <= 1


def test_the_generators_reach_shared_tables_and_conflicts() -> None:
    """Properties that hold only for empty tables would prove nothing: the generators do
    make chains with several users, a user claimed by two policies, and a section table."""

    def rich(example: tuple[Any, list[bytes]]) -> bool:
        listener, resources = example
        result = hook(*resources, listener=listener, mode=UnprotectedMode.DENY)
        conflicts = [e for e in result.errors if isinstance(e, ConflictError)]
        return result.users >= 2 and bool(conflicts) and len(listener.filter_chains) >= 2

    find(
        st.tuples(listeners(), policy_sets()),
        rich,
        settings=settings(max_examples=5000, database=None, derandomize=True, deadline=None),
    )
