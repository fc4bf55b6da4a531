"""Properties of the compiler over generated policies, listeners and credential columns
(hypothesis).

The examples in tests/test_compiler.py and the corpus in tests/support/hostile_cases.py show
chosen inputs; here hypothesis makes up the inputs and four promises must hold for all:

- every basic_auth table the compiler emits reads cleanly by Envoy's rules
  (`parse_like_envoy`), every HTTP connection manager gets exactly one, and nobody is in
  it whom some policy did not offer with that very password;
- the output is deterministic: the same input twice, or the same policies in another
  order, give identical bytes;
- the hook applied to its own output changes nothing (idempotence);
- the column fast path of compiler/users.py (a whole column validated in one match and
  hashed at once) and its per-user checks give the same table and reject the same entries
  for the same reasons, whichever credentials a store holds.

Policies mix plain names and passwords with random printable and hostile strings,
targetRefs with and without sectionName, users claimed by several policies, creation
timestamps that tie, unreadable bytes and objects of other kinds. Listeners are built
like tests/support/builders.py: plain HTTP, HTTPS with several chains, HTTP/3, TCP chains,
none, and a manager written as a TypedStruct. Namespace/name pairs are unique within a
call, as Kubernetes guarantees. Credential columns are mostly plain, with a few entries
spoilt (hostile names, controls, surrogates, hashes of every scheme, `{SHA}` values of
every shape, names listed twice or claimed by an older policy), of every CredentialKind.

`hook` (tests/support/compile.py) compiles with a resolver of its own and no memo, so
every table and listener is compiled anew. The settings are fixed (derandomized, no
example database) so CI sees the same examples every run, in a few seconds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any
from unittest import mock

from envoy.config.listener.v3 import listener_pb2
from google.protobuf import json_format
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from xds.type.v3 import typed_struct_pb2

from backends import CredentialResolver
from compiler import users
from compiler.errors import ConflictError, PolicyError
from compiler.htpasswd import MAX_PASSWORD_BYTES, MAX_USERNAME_BYTES, parse_like_envoy
from compiler.listener import FILTER_NAME, HCM_TYPE
from compiler.model import (
    CompileOptions,
    CredentialKind,
    Credentials,
    Policy,
    PolicyRef,
    Secrets,
    TargetRef,
    UnprotectedMode,
    UsersFrom,
    VaultRef,
)
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
# "default" twice: the namespace of most generated Gateways, so that policies meet on chains
NAMESPACES = ["default", "default", "team-a", "team-b"]
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
        # now and then no targetRefs at all: rejected (it names no Gateway)
        if draw(st.integers(0, 9)):
            spec["targetRefs"] = draw(st.lists(TARGET, min_size=1, max_size=2))
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


# --- Credential columns: the fast path and the per-user checks ----------------------------------

COLUMNS = settings(EXAMPLES, max_examples=300)
ANY_CHARACTER = st.characters(exclude_categories=())  # surrogates too, which stores can hold
# Names that pass every rule, and a few that several columns claim (duplicates, conflicts).
VALID_NAMES = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=":#"),
    min_size=1,
    max_size=10,
)
CLAIMED_NAMES = st.sampled_from(["admin", "alice", "bob"])
ODD_NAMES = st.one_of(
    st.text(PRINTABLE, max_size=12),  # ':', a leading '#', spaces at either end
    st.text(ANY_CHARACTER, max_size=12),  # controls, format characters, surrogates, not NFC
    st.sampled_from(sorted(HOSTILE_USERNAMES.values())),
    st.sampled_from(["jürgen", "ユーザー", "u" * 256, "é" * 128, "é" * 129]),
)
# A stored value of each scheme compiler/schemes.py tells apart.
STORED_HASHES = [
    "{SHA}GpHWL3ymc5liWkNopqtdSjuqYHM=",
    "$2y$05$bvIG6Nmid91Mu9RcmmWZfO5HJIMCT8riNW0hEp8f6/FuA2/mHZFpe",
    "$bcrypt-sha256$v=2,t=2b,r=12$n79VH.0Q2TMWmt3Oqt9uku$Kq4Noyk3094Y2QlB8NdRT8SvGiI4ft2",
    "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$4GFOdfDb8Gl0JlbjNB4ULS0KAtt9PRFMxx2QBQPg6p8",
    "$apr1$3tVE9pDM$XQR8968u77dHZ/QUoneab0",
    "$1$7FD6rkOo$YDSJU4O86lEtxJXsBtITv/",
    "$5$rounds=1000$6cDdR/b0udPHWLn5$JebGcqVdSXu1VsbW9Vj256/mr8OocK4PKZ5y6PkJ1cC",
    "$6$rounds=1000$afrKIB3due9Vo7FO$2vWUmMkjszImNN5PLX1KhMLOyK3LbN/MEgdrHmOOXllo2WqVS.EjKZyzxR"
    "xUM2hyIpQ4JSZJs8HhoIGJWHrcJ.",
    "$scram$1000$c2FsdHNhbHRzYWx0$sha-1=PGUG9tIHTBINIK.3a0UjV5ugYkQ,"
    "sha-256=4uzIwmR5CBzbkuSnP3BSItaBwmu0UF1J/6zIhqZ6Auw",
    "$y$j9T$salt$hash",  # a crypt(3) scheme libpass does not know
    "{SSHA}15v6utzJYj/EniFsEUFzwqaSakNlrBWC",
    "{SSHA256}TCjaRnypDROJWLmy6H0otmvknK5eb2IImZN9x1MIyB3bW4tRSukdQw==",
    "{MD5}j+TBFFEoHAlKZXjm3b9e7Q==",
    "{SMD5}bmwS37XOlZ9f0JA718uEZ1uLkXI=",
    "{CRYPT}xEssQQmvsF2yU",
    "{sha}GpHWL3ymc5liWkNopqtdSjuqYHM=",  # lower case: not Envoy's {SHA}
    "xEssQQmvsF2yU",  # DES crypt, which only htpasswd text tells from a password
    "_/...TKYVgwEMXRkKhhM",  # BSDi crypt
]
VALUES = st.text(PRINTABLE, min_size=1, max_size=16)  # '$' or '{' first: maybe a hash
ODD_VALUES = st.one_of(
    st.sampled_from(STORED_HASHES),
    st.text(PRINTABLE, max_size=16).map(sha),  # a good {SHA} hash of anything
    st.text(PRINTABLE, max_size=30).map("{SHA}".__add__),  # {SHA} and what follows it
    st.just("{SHA}" + "A" * 28),  # base64, but 21 bytes: not a SHA-1 digest
    st.text(ANY_CHARACTER, max_size=16),
    st.sampled_from(["", "$", "{", "a\nb", "p" * 4096, "p" * 4097, "é" * 2048, "é" * 2049]),
)
# Characters where a rule draws its line: ASCII the rules treat apart, controls (C0, DEL,
# C1), invisible format characters, a lone surrogate, a combining mark, unassigned code
# points, printable non-ASCII. Each example tries every one of them at one place.
BOUNDARY_CHARACTERS = (
    *(" ", "#", ":", "$", "{", "\t", "\n", "\r", "\x00", "\x1f", "\x7f", "\x85", "\xa0"),
    *("\u200b", "\u200d", "\u202e", "\ud800", "\u0308", "\u0378", "\uffff", "é", "ユ", "😀"),
)


@st.composite
def credential_columns(draw: st.DrawFn) -> Credentials:
    """A column of users as a store gives it: mostly plain, some entries odd, any kind."""
    claimed = draw(st.booleans())  # some of its names claimed by other columns too
    names = draw(
        st.lists(st.one_of(VALID_NAMES, CLAIMED_NAMES) if claimed else VALID_NAMES, max_size=12)
    )
    values = [draw(VALUES) for _ in names]
    for _ in range(draw(st.integers(0, 2)) if names else 0):
        index = draw(st.integers(0, len(names) - 1))
        if draw(st.booleans()):
            names[index] = draw(ODD_NAMES)
        else:
            values[index] = draw(ODD_VALUES)
    kind = draw(st.sampled_from(CredentialKind))
    field = "spec.password" if kind is CredentialKind.PLAIN else "spec.usersFrom"
    return Credentials(tuple(names), Secrets(tuple(values)), "spec.usersFrom", field, kind)


@st.composite
def columns_of_policies(draw: st.DrawFn) -> list[users.Resolved]:
    """One to three policies of one chain, each with a column; ages may tie."""
    resolved = []
    for index, column in enumerate(draw(st.lists(credential_columns(), min_size=1, max_size=3))):
        name = f"{draw(st.sampled_from(['a', 'm', 'z']))}-{index}"
        policy = Policy(
            PolicyRef(draw(st.sampled_from(NAMESPACES)), name),
            draw(st.sampled_from(["", *TIMESTAMPS])),
            (TargetRef("gateway.networking.k8s.io", "Gateway", "eg"),),
            UsersFrom(VaultRef(f"secret/data/gateways/default/{name}")),
        )
        resolved.append(users.Resolved(policy, column))
    return resolved


def changed(
    resolved: list[users.Resolved], place: tuple[int, int, bool], edit: Callable[[str], str]
) -> list[users.Resolved]:
    """The same policies with one name or value edited: (policy, entry, whether the name)."""
    which, entry, in_name = place
    item = resolved[which]
    names, values = list(item.credentials.usernames), list(item.credentials.passwords.reveal())
    column = names if in_name else values
    column[entry] = edit(column[entry])
    credentials = Credentials(
        tuple(names),
        Secrets(tuple(values)),
        item.credentials.username_field,
        item.credentials.password_field,
        item.credentials.kind,
    )
    return [*resolved[:which], users.Resolved(item.policy, credentials), *resolved[which + 1 :]]


def inserted(character: str, at: str) -> Callable[[str], str]:
    """An edit: `character` put at the start of the text, in its middle or at its end."""

    def edit(text: str) -> str:
        index = {"start": 0, "middle": len(text) // 2, "end": len(text)}[at]
        return text[:index] + character + text[index:]

    return edit


def stretched(length: int) -> Callable[[str], str]:
    """An edit: the text repeated to `length` characters."""
    return lambda text: ((text or "x") * length)[:length]


def verdicts(errors: Sequence[PolicyError]) -> list[tuple[str, str, str, str, str]]:
    return [(type(e).__name__, str(e.policy), e.field, e.problem, e.fix) for e in errors]


def assert_both_paths_agree(resolved: list[users.Resolved]) -> None:
    fast = users.compile_users(resolved)
    with mock.patch("compiler.users._in_bulk", return_value=False):
        careful = users.compile_users(resolved)
    assert fast.htpasswd == careful.htpasswd
    assert fast.users == careful.users
    assert verdicts(fast.errors) == verdicts(careful.errors)


def paths_taken(resolved: list[users.Resolved]) -> list[tuple[Credentials, bool]]:
    """Each column compile_users looked at, and whether it took the fast path."""
    taken: list[tuple[Credentials, bool]] = []
    real = users._in_bulk

    def recording(credentials: Credentials, owners: Any) -> bool:
        taken.append((credentials, real(credentials, owners)))
        return taken[-1][1]

    with mock.patch("compiler.users._in_bulk", recording):
        users.compile_users(resolved)
    return taken


@COLUMNS
@given(resolved=columns_of_policies(), data=st.data())
def test_the_column_fast_path_and_the_per_user_checks_agree(
    resolved: list[users.Resolved], data: st.DataObject
) -> None:
    """A column that passes the one-match check is hashed at once; anything else goes user
    by user, so each problem gets its own error. Whichever path a column takes, Envoy must
    get the same table and the operator the same rejections: for the columns as drawn, and
    with one of their names or values edited: each boundary character in turn put into it,
    and the text stretched to the longest length allowed and one past it."""
    assert_both_paths_agree(resolved)
    which = data.draw(st.integers(0, len(resolved) - 1))
    size = len(resolved[which].credentials)
    if not size:
        return
    place = (which, data.draw(st.integers(0, size - 1)), data.draw(st.booleans()))
    at = data.draw(st.sampled_from(["start", "middle", "end"]))
    limit = MAX_USERNAME_BYTES if place[2] else MAX_PASSWORD_BYTES
    edits = [inserted(character, at) for character in BOUNDARY_CHARACTERS]
    for edit in [*edits, stretched(limit), stretched(limit + 1)]:
        assert_both_paths_agree(changed(resolved, place, edit))


def test_the_columns_reach_both_paths_in_one_call() -> None:
    """The property holds nothing if the fast path is never taken, or always: the columns
    do make calls where a column of several stored users is hashed at once and another
    one goes user by user."""

    def both_paths(resolved: list[users.Resolved]) -> bool:
        taken = paths_taken(resolved)
        return any(not fast for _, fast in taken) and any(
            fast and column.kind is CredentialKind.STORED and len(column) >= 3
            for column, fast in taken
        )

    find(
        columns_of_policies(),
        both_paths,
        # the first such call shows it: shrinking it would only cost time
        settings=settings(
            max_examples=5000,
            database=None,
            derandomize=True,
            deadline=None,
            phases=[Phase.generate],
        ),
    )
