"""A bounded fuzz run of the policy parser and the listener rewriter (`make fuzz`).

    python -m reliability.fuzz [--seconds 120]

Hypothesis (no native build, unlike atheris) generates inputs for five targets, taking
turns in rounds of 150 examples until the time is up:

- `policy-bytes`: arbitrary bytes, and valid policies cut or spliced with random bytes, as
  `extension_resources`, through `compiler.parse.parse_resources` and
  `compiler.pipeline.load_policies`, then compiled onto an HTTP and an HTTPS listener;
- `policy-json`: valid policies of every shape with JSON-level mutations (fields removed,
  added or retyped, hostile strings and numbers, nesting thousands deep), the same way;
- `listener-bytes`: corpus-like listeners (tests/support/builders.py, and the shared Envoy Gateway
  corpus when it sits next to the checkout) with random bytes spliced into the serialized
  listener or into one connection manager's config, read back with `Listener.FromString`
  where it parses, through `compiler.pipeline.compile_listener`;
- `listener-shape`: listeners assembled from random pieces: chains with and without names,
  managers typed, as a TypedStruct or of odd type URLs, HTTP filters of every kind Envoy
  Gateway ranks, of unknown types, stale copies of ours, upgrade configs, TCP proxies;
- `store-values`: what a team can store under its own prefix (JSON of any shape, nested
  past any parser's limit, huge, empty, htpasswd text with odd line ends, hashes of every
  scheme), read by the real Vault and Secrets Manager stores through policies beside a
  plain neighbour (reliability/stored.py).

A crash is any exception that escapes (the API raises for nothing; `Listener.FromString`'s
DecodeError only means the bytes are no listener) or a broken invariant: a table that
`parse_like_envoy` rejects or that admits a user no policy offered; a decodable manager
without exactly one filter of ours, or ours after a filter Envoy Gateway ranks after
basic_auth; an undecodable manager changed; anything changed besides our filter; an
answer that changes when the hook is applied to it again; an error that does not name its
policy and field, is unbounded, or quotes a password (the answer's invariants live in
tests/support/hostile_checks.py, shared with the hostile corpus). Each crash is shrunk by hypothesis
and printed as a Python reproducer; the run then exits 1. At the end it prints the
seconds run, the examples tried per target and the crashes found.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.basic_auth.v3 import basic_auth_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, Phase, Verbosity, find, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample
from xds.type.v3 import typed_struct_pb2

from backends import CredentialResolver
from compiler.errors import PolicyError
from compiler.filters import FILTER_ORDER
from compiler.htpasswd import sha_hash
from compiler.listener import FILTER_NAME, HCM_TYPE
from compiler.model import Policy, Secret
from compiler.parse import IgnoredResource, parse_resources
from compiler.pipeline import PolicySet, compile_listener, load_policies
from reliability.stored import check_stored, stored_examples, stored_reproducer
from tests.support.hostile_checks import (
    Crash,
    check_protected,
    manager_shape,
    network_filters,
    require,
    serialized,
)

Listener = Any  # envoy.config.listener.v3.Listener; xds-protos ships no type information

DEFAULT_SECONDS = 120.0
ROUND = 150  # examples per turn of a target: keeps the overrun past --seconds small
LONGEST_ERROR = 2000  # characters: a message must never carry a hostile value whole
HCM_URL = f"type.googleapis.com/{HCM_TYPE}"
RESOLVER = CredentialResolver()  # no stores configured: a store reference fails closed


# --- Policies --------------------------------------------------------------------------------

API_VERSION = "example.extensions.io/v1alpha1"
KIND = "ListenerContextExample"
GATEWAY = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "eg"}


def _seed(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"targetRefs": [GATEWAY], **spec},
    }


VAULT = {"vault": {"path": "secret/data/d", "key": "k"}}
SEEDS: list[dict[str, Any]] = [
    _seed("plain", {"username": "alice", "password": "alice-password"}),
    _seed("header", {"username": "bob", "password": "bob-pw", "forwardUsernameHeader": "X-U"}),
    _seed("revision", {"username": "carol", "password": "carol-pw", "credentialsRevision": "r1"}),
    _seed("vault", {"username": "dave", "passwordFrom": VAULT}),
    _seed("aws", {"username": "erin", "passwordFrom": {"awsSecretsManager": {"secretId": "x"}}}),
    _seed("users", {"usersFrom": {"vault": {"path": "secret/data/team", "engine": "kv-v1"}}}),
    _seed(
        "section",
        {
            "targetRefs": [{**GATEWAY, "sectionName": "a"}],
            "username": "frank",
            "password": "frank-password",
        },
    ),
]
SEED_BYTES = [json.dumps(seed).encode() for seed in SEEDS]

HOSTILE_STRINGS = [
    "",
    "a:b",
    "a\nb",
    "a\rb",
    "a\x00b",
    "#root",
    " user",
    "user ",
    "\u202euser",
    "\ud800",
    "ju\u0308rgen",
    "jürgen",
    "ユーザー",
    "{SHA}V7KtmQRNM3GXwMOf04I1aP+B5Io=",
    "$2y$05$bvIG6Nmid91Mu9RcmmWZfO5HJIMCT8riNW0hEp8f6/FuA2/mHZFpe",
    "x" * 300,
    "é" * 2049,
    "Authorization",
    "default",
    "secret/data/other-team/x",
]
KNOWN_KEYS = [
    "apiVersion",
    "kind",
    "metadata",
    "spec",
    "name",
    "namespace",
    "creationTimestamp",
    "targetRefs",
    "username",
    "password",
    "passwordFrom",
    "usersFrom",
    "forwardUsernameHeader",
    "credentialsRevision",
    "vault",
    "awsSecretsManager",
    "path",
    "engine",
    "key",
    "version",
    "secretId",
    "versionStage",
    "versionId",
    "group",
    "sectionName",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=24),
    st.sampled_from(HOSTILE_STRINGS),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
# Values json.dumps cannot write, put in the text after it: nesting thousands deep, and a
# number beyond Python's 4300-digit limit for reading integers.
NESTED = "\x00nested\x00"
BIG_NUMBER = "\x00number\x00"


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


def _parent(document: Any, path: tuple[Any, ...]) -> Any:
    for step in path[:-1]:
        document = document[step]
    return document


@st.composite
def mutated_policies(draw: st.DrawFn) -> bytes:
    """A valid policy with one to four JSON-level mutations, as the bytes sent."""
    document = json.loads(draw(st.sampled_from(SEED_BYTES)))
    nested = 0
    for _ in range(draw(st.integers(1, 4))):
        paths = [path for path in _paths(document) if path]
        operation = draw(
            st.sampled_from(["replace", "delete", "add", "retype", "nest", "number", "huge"])
        )
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, last = _parent(document, path), path[-1]
        if operation == "replace":
            parent[last] = draw(JSON_VALUES)
        elif operation == "delete":
            del parent[last]
        elif operation == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(KNOWN_KEYS) | st.text(max_size=8))] = draw(JSON_VALUES)
        elif operation == "retype":
            parent[last] = draw(st.sampled_from([[parent[last]], str(parent[last]), 0, {}]))
        elif operation == "nest" and not nested:
            parent[last], nested = NESTED, draw(st.integers(10, 20_000))
        elif operation == "number":
            parent[last] = BIG_NUMBER
        elif operation == "huge":
            parent[last] = draw(st.sampled_from("xé:\n#")) * draw(st.integers(250, 70_000))
    text = json.dumps(document, ensure_ascii=draw(st.booleans()))
    if nested:
        text = text.replace(json.dumps(NESTED), "[" * nested + "1" + "]" * nested)
    text = text.replace(json.dumps(BIG_NUMBER), "7" * 5000)
    return text.encode("utf-8", "surrogatepass")


@st.composite
def spliced(draw: st.DrawFn, base: bytes) -> bytes:
    """`base` with one to four random edits: inserts, overwrites, deletions, copies, flips."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        operation = draw(st.sampled_from(["insert", "overwrite", "delete", "copy", "flip"]))
        if operation == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif operation == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(chunk)] = chunk
        elif operation == "delete":
            del data[at : at + draw(st.integers(1, 32))]
        elif operation == "copy" and data:
            start = draw(st.integers(0, len(data) - 1))
            data[at:at] = data[start : start + draw(st.integers(1, 32))]
        elif operation == "flip" and data:
            data[min(at, len(data) - 1)] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


POLICY_BYTES = st.lists(
    st.one_of(
        st.binary(max_size=200),
        st.sampled_from(SEED_BYTES).flatmap(spliced),
        st.sampled_from(SEED_BYTES).flatmap(lambda seed: st.just(seed[: len(seed) // 2])),
    ),
    min_size=1,
    max_size=4,
)
POLICY_JSON = st.lists(
    st.one_of(mutated_policies(), st.sampled_from(SEED_BYTES)), min_size=1, max_size=4
)


def check_policies(resources: list[bytes]) -> None:
    """Parse, resolve and compile; every error names its policy and field, briefly."""
    parsed = parse_resources(resources)
    require(len(parsed) == len(resources), "not one result per resource")
    for item in parsed:
        require(isinstance(item, Policy | IgnoredResource | PolicyError), f"parsed to {item!r}")
    policies = load_policies(resources, RESOLVER)
    secrets = _plain_passwords(resources)
    for listener in POLICY_LISTENERS:
        result = compile_listener(listener, policies)
        check_protected(listener, result.listener, _offered(resources))
        for error in result.errors:
            text = str(error)
            require(
                text.startswith(f"policy {error.policy}: {error.field}: "),
                f"an error does not name its policy and field: {text[:200]!r}",
            )
            require(len(text) < LONGEST_ERROR, f"an error of {len(text)} characters")
            for password in secrets:
                require(password not in text, "an error quotes a password")


def _documents(resources: Sequence[bytes]) -> Iterator[Any]:
    for data in resources:
        try:
            yield json.loads(data)
        except (ValueError, RecursionError):
            continue


def _offered(resources: Sequence[bytes]) -> set[tuple[str, str]]:
    """(user, {SHA} hash) of every plain user name and password the resources hold."""
    pairs = set()
    for document in _documents(resources):
        try:
            username, password = document["spec"]["username"], document["spec"]["password"]
        except (KeyError, TypeError):
            continue
        if isinstance(username, str) and isinstance(password, str):
            try:
                pairs.add((username, sha_hash(Secret(password))))
            except UnicodeEncodeError:
                continue
    return pairs


def _plain_passwords(resources: Sequence[bytes]) -> list[str]:
    """Plain passwords that no other string of their policy contains (those may be quoted)."""
    found = []
    for document in _documents(resources):
        try:
            password = document["spec"]["password"]
        except (KeyError, TypeError):
            continue
        if not isinstance(password, str) or len(password) < 8:
            continue
        document["spec"]["password"] = None
        others = [text for text in _strings(document) if password in text]
        if not others:
            found.append(password)
    return found


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


# --- Listeners -------------------------------------------------------------------------------


def _builders() -> Any:
    """tests/support/builders.py: the listeners the test suite builds (run from the project
    root)."""
    from tests.support import builders  # noqa: PLC0415 (not an installed package)

    return builders


def corpus_listeners() -> list[Listener]:
    """Listeners to mutate: built like the tests', plus the shared corpus when present."""
    b = _builders()
    websocket = b.http_listener()
    hcm = b.managers(websocket)[0]
    hcm.upgrade_configs.add(upgrade_type="websocket").filters.append(hcm.http_filters[-1])
    websocket.default_filter_chain.filters[0].typed_config.Pack(hcm)
    mixed = b.https_listener("a", "b")
    mixed.filter_chains.add(name="tcproute/default/db").filters.append(b.tcp_proxy())
    mixed.default_filter_chain.filters.append(b.manager(*b.eg_security_filters()))
    listeners = [
        b.http_listener(),
        b.http_listener(*b.eg_security_filters()),
        b.https_listener("a", "b", "c"),
        websocket,
        mixed,
        struct_manager_listener(),
        listener_pb2.Listener(name="empty"),
    ]
    listeners.append(compile_listener(b.http_listener(), POLICY_SETS[0]).listener)  # ours in it
    try:
        from tests.support.corpus import CORPUS  # noqa: PLC0415
        from tests.support.validate import load_corpus_listeners  # noqa: PLC0415
    except ImportError:  # pragma: no cover
        return listeners
    if CORPUS.is_dir():
        loaded = load_corpus_listeners(CORPUS)
        listeners += [listener for _, listener in loaded if not isinstance(listener, str)]
    return listeners


def struct_manager_listener() -> Listener:
    b = _builders()
    listener = b.http_listener(*b.eg_security_filters())
    typed_struct = typed_struct_pb2.TypedStruct(type_url=HCM_URL)
    typed_struct.value.update(
        json_format.MessageToDict(b.managers(listener)[0], preserving_proto_field_name=True)
    )
    listener.default_filter_chain.filters[0].typed_config.Pack(typed_struct)
    return listener


def _policy_set(*resources: bytes) -> PolicySet:
    return load_policies(list(resources), RESOLVER)


POLICY_SETS = [
    _policy_set(SEED_BYTES[0]),
    _policy_set(SEED_BYTES[0], SEED_BYTES[6], SEED_BYTES[3], b"{broken"),
    _policy_set(
        SEED_BYTES[1], json.dumps(_seed("claim", {"username": "bob", "password": "x1"})).encode()
    ),
]


def _policy_listeners() -> list[Listener]:
    b = _builders()
    return [b.http_listener(*b.eg_security_filters()), b.https_listener("a", "b")]


POLICY_LISTENERS = _policy_listeners()
CORPUS_LISTENERS: list[Listener] = []  # filled in by main(), once: the corpus takes a second


@st.composite
def spliced_listeners(draw: st.DrawFn) -> tuple[bytes, int]:
    """Serialized corpus listeners with random edits, in the listener or in one manager."""
    base = draw(st.sampled_from(CORPUS_LISTENERS))
    in_a_manager = draw(st.booleans())
    if in_a_manager and any(f.HasField("typed_config") for f in network_filters(base)):
        copy = listener_pb2.Listener()
        copy.CopyFrom(base)
        target = draw(
            st.sampled_from([f for f in network_filters(copy) if f.HasField("typed_config")])
        )
        target.typed_config.value = draw(spliced(bytes(target.typed_config.value)))
        data = copy.SerializeToString()
    else:
        data = draw(spliced(base.SerializeToString()))
    return data, draw(st.integers(0, len(POLICY_SETS) - 1))


KNOWN_KINDS = list(FILTER_ORDER)
TYPE_URLS = st.one_of(
    st.sampled_from(KNOWN_KINDS).map(
        lambda kind: f"type.googleapis.com/envoy.extensions.filters.http.{kind}.v3.X"
    ),
    st.sampled_from(
        [
            "",
            "type.googleapis.com/example.Unknown",
            "example.Unknown",
            HCM_URL,
            "type.googleapis.com/envoy.extensions.filters.http.basic_auth.v3.BasicAuth",
            "/",
            "type.googleapis.com/",
        ]
    ),
    st.text(max_size=20),
)
FILTER_NAMES = st.one_of(
    st.sampled_from(KNOWN_KINDS).map(lambda kind: f"envoy.filters.http.{kind}"),
    st.sampled_from(KNOWN_KINDS).map(lambda kind: f"envoy.filters.http.{kind}/securitypolicy/x"),
    st.sampled_from([FILTER_NAME, "envoy.filters.http.basic_auth/zzz", "", "vendor.custom"]),
    st.text(max_size=20),
)


@st.composite
def http_filters(draw: st.DrawFn) -> Any:
    http_filter = hcm_pb2.HttpFilter(name=draw(FILTER_NAMES))
    if draw(st.integers(0, 4)):
        url = draw(TYPE_URLS)
        http_filter.typed_config.type_url = url
        if url.endswith("BasicAuth") and draw(st.booleans()):
            stale = basic_auth_pb2.BasicAuth()
            stale.users.inline_string = draw(st.sampled_from(["", "a:b\n", "#\n", "x"]))
            http_filter.typed_config.value = stale.SerializeToString()
        else:
            http_filter.typed_config.value = draw(st.binary(max_size=12))
    http_filter.disabled = draw(st.booleans())
    http_filter.is_optional = draw(st.booleans())
    return http_filter


@st.composite
def managers_of_any_shape(draw: st.DrawFn) -> Any:
    """A connection manager filter: typed, as a TypedStruct, or with an odd type URL."""
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix="fuzz")
    hcm.http_filters.extend(draw(st.lists(http_filters(), max_size=6)))
    for _ in range(draw(st.integers(0, 2))):
        upgrade = hcm.upgrade_configs.add(upgrade_type=draw(st.sampled_from(["websocket", "x"])))
        upgrade.filters.extend(draw(st.lists(http_filters(), max_size=2)))
    network = listener_components_pb2.Filter(name=draw(st.text(max_size=10)))
    shape = draw(st.sampled_from(["typed", "typed", "odd-url", "struct", "struct-raw"]))
    if shape in ("typed", "odd-url"):
        network.typed_config.Pack(hcm)
        if shape == "odd-url":
            prefix = draw(st.sampled_from(["", "example.com/", "a/b/c/", "/"]))
            network.typed_config.type_url = prefix + HCM_TYPE
        return network
    typed_struct = typed_struct_pb2.TypedStruct(type_url=draw(st.sampled_from([HCM_URL, HCM_TYPE])))
    if shape == "struct":
        typed_struct.value.update(_struct_config(hcm, camel=draw(st.booleans())))
    else:
        typed_struct.value.update(
            draw(st.dictionaries(st.sampled_from(STRUCT_KEYS), STRUCT_VALUES))
        )
    network.typed_config.Pack(typed_struct)
    if draw(st.booleans()):
        network.typed_config.type_url = "type.googleapis.com/udpa.type.v1.TypedStruct"
    return network


def _struct_config(hcm: Any, *, camel: bool) -> dict[str, Any]:
    """The manager as Envoy reads it from a TypedStruct (JSON), in either spelling.

    Written out by hand: json_format cannot write the made-up filter types.
    """

    def entry(http_filter: Any) -> dict[str, Any]:
        written: dict[str, Any] = {"name": http_filter.name}
        if http_filter.HasField("typed_config"):
            key = "typedConfig" if camel else "typed_config"
            written[key] = {"@type": http_filter.typed_config.type_url}
        return written

    config: dict[str, Any] = {
        "statPrefix" if camel else "stat_prefix": hcm.stat_prefix,
        "httpFilters" if camel else "http_filters": [entry(f) for f in hcm.http_filters],
    }
    if len(hcm.upgrade_configs):
        config["upgradeConfigs" if camel else "upgrade_configs"] = [
            {"filters": [entry(f) for f in upgrade.filters]} for upgrade in hcm.upgrade_configs
        ]
    return config


STRUCT_KEYS = ["http_filters", "httpFilters", "upgrade_configs", "upgradeConfigs", "stat_prefix"]
STRUCT_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["name", "filters", "typed_config", "@type"]), inner)
    ),
    max_leaves=8,
)


@st.composite
def other_filters(draw: st.DrawFn) -> Any:
    network = listener_components_pb2.Filter(name=draw(st.text(max_size=10)))
    if draw(st.booleans()):
        network.typed_config.type_url = draw(TYPE_URLS)
        network.typed_config.value = draw(st.binary(max_size=16))
    return network


@st.composite
def shaped_listeners(draw: st.DrawFn) -> tuple[bytes, int]:
    listener = listener_pb2.Listener(name="fuzz")
    chains = [listener.filter_chains.add() for _ in range(draw(st.integers(0, 3)))]
    if draw(st.booleans()):
        chains.append(listener.default_filter_chain)
        listener.default_filter_chain.SetInParent()
    names = st.sampled_from(["", "default/eg/a", "default/eg/b", "team-a/eg/a", "x/y", "/eg/a"])
    for chain in chains:
        chain.name = draw(names | st.text(max_size=12))
        filters = st.one_of(managers_of_any_shape(), other_filters())
        chain.filters.extend(draw(st.lists(filters, max_size=3)))
    return listener.SerializeToString(), draw(st.integers(0, len(POLICY_SETS) - 1))


def check_listener(example: tuple[bytes, int]) -> None:
    data, which = example
    try:
        listener = listener_pb2.Listener.FromString(data)
    except DecodeError:
        return  # not a listener: the gRPC layer refuses such a request before we see it
    policies = POLICY_SETS[which]
    result = compile_listener(listener, policies)
    check_protected(listener, result.listener)
    managers = [f for f in network_filters(listener) if manager_shape(f)]
    require(
        result.report.managers_protected + len(result.report.undecodable) == len(managers),
        f"{len(managers)} managers, report {result.report}",
    )
    again = compile_listener(result.listener, policies).listener
    require(serialized(again) == serialized(result.listener), "the hook changes its own answer")


# --- The run ---------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    strategy: st.SearchStrategy[Any]
    check: Callable[[Any], None]
    reproduce: Callable[[Any], str]
    tried: int = 0
    crashes: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def crashed(self, value: Any) -> bool:
        self.tried += 1
        try:
            self.check(value)
        except Exception:
            return True
        return False


def _policy_reproducer(resources: list[bytes]) -> str:
    return f"from reliability.fuzz import check_policies\ncheck_policies({resources!r})"


def _listener_reproducer(example: tuple[bytes, int]) -> str:
    data, which = example
    return (
        "from reliability.fuzz import check_listener\n"
        f"check_listener((bytes.fromhex({data.hex()!r}), {which}))"
    )


def targets() -> list[Target]:
    return [
        Target("policy-bytes", POLICY_BYTES, check_policies, _policy_reproducer),
        Target("policy-json", POLICY_JSON, check_policies, _policy_reproducer),
        Target("listener-bytes", spliced_listeners(), check_listener, _listener_reproducer),
        Target("listener-shape", shaped_listeners(), check_listener, _listener_reproducer),
        Target(
            "store-values",
            stored_examples(),
            lambda example: check_stored(example, POLICY_LISTENERS),
            stored_reproducer,
        ),
    ]


def one_round(target: Target, examples: int) -> None:
    """Up to `examples` inputs; a crash is shrunk, described and remembered."""
    try:
        found = find(
            target.strategy,
            target.crashed,
            settings=settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=False,
                phases=[Phase.generate, Phase.shrink],
                suppress_health_check=list(HealthCheck),
                verbosity=Verbosity.quiet,
            ),
        )
    except NoSuchExample:
        return
    try:
        target.check(found)
    except Exception as error:
        where = traceback.extract_tb(error.__traceback__)[-1]
        # Invariants by their message, exceptions by where they were raised.
        key = (
            f"{type(error).__name__}: {str(error)[:80]}"
            if isinstance(error, Crash)
            else f"{type(error).__name__} at {where.filename}:{where.lineno}"
        )
        if key in target.seen:
            return
        target.seen.add(key)
        description = "".join(traceback.format_exception(error)).rstrip()
        target.crashes.append(f"{description}\n\nReproducer:\n{target.reproduce(found)}")
        print(f"\nCRASH in {target.name}: {key}\n{target.crashes[-1]}\n", flush=True)
    else:  # pragma: no cover (a flaky check: report it as such)
        target.crashes.append(f"flaky: crashed once, not again, on {target.reproduce(found)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reliability.fuzz", description=__doc__)
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="time to run")
    options = parser.parse_args(argv)
    started = time.monotonic()
    CORPUS_LISTENERS[:] = corpus_listeners()
    print(
        f"fuzzing for {options.seconds:g} s; {len(CORPUS_LISTENERS)} corpus listeners", flush=True
    )
    run = targets()
    deadline = started + options.seconds
    while time.monotonic() < deadline:
        for target in run:
            if time.monotonic() >= deadline:
                break
            one_round(target, ROUND)
    seconds = time.monotonic() - started
    crashes = sum(len(target.crashes) for target in run)
    print(f"\nseconds run: {seconds:.1f}")
    for target in run:
        print(f"  {target.name:<16} {target.tried:>8} examples  {len(target.crashes)} crashes")
    print(f"crashes found: {crashes}")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
