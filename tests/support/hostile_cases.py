"""The hostile-input corpus: what a careless or malicious cluster can put into one hook call.

Each case is one PostHTTPListenerModify call (a listener and the extension resources sent
with it) and what must come back: which policies are rejected, named by `namespace/name`
and field (`<unknown>/extension_resources[i]` where the object cannot be read far enough
to know its name); which users are admitted (everyone else is not); which objects of
other kinds are ignored; which connection managers cannot be decoded; which parts pass
through byte for byte; and whether Envoy rejects the listener whatever the hook does.
tests/test_hostile_input.py sends every case to a real server over gRPC.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.basic_auth.v3 import basic_auth_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import json_format
from google.protobuf.unknown_fields import UnknownFieldSet
from udpa.type.v1 import typed_struct_pb2 as udpa_typed_struct_pb2
from xds.type.v3 import typed_struct_pb2

from compiler.listener import FILTER_NAME
from tests.support.builders import (
    as_http3,
    eg_security_filters,
    http_filter,
    http_listener,
    https_listener,
    policy,
    tcp_proxy,
)
from tests.support.secrets import remember, sha

Listener = Any  # envoy.config.listener.v3.Listener
MiB = 1024 * 1024
API_VERSION = "example.extensions.io/v1alpha1"
KIND = "ListenerContextExample"
GATEWAY = [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "eg"}]
HCM_URL = "type.googleapis.com/" + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name
UNKNOWN_URL = "type.googleapis.com/example.Unknown"
OPAQUE_BYTES = b"\x0a\x03abc\x98\x01\x07\xfa\xf0\x04\x02zz"  # what example.Unknown might hold

# The valid policy sent beside the hostile input: its user must still get in.
NEIGHBOUR = policy("valid-neighbour", "alice", "alice-neighbour-pw")
ALICE = {"alice": "alice-neighbour-pw"}
UNREADABLE = "<unknown>/extension_resources[0]"  # how an object without a usable name is named


@dataclass(frozen=True)
class Rejected:
    """One per-policy error the server must report."""

    policy: str  # namespace/name
    field: str
    reason: str = "MalformedPolicyError"  # the PolicyError subclass


@dataclass(frozen=True)
class HostileCase:
    """One hook call (a listener and the resources with it) and what must come back."""

    id: str
    listener: Listener
    resources: tuple[bytes, ...]
    admitted: Mapping[str, str]  # user -> password, on every HTTP manager; nobody else
    rejected: tuple[Rejected, ...] = ()
    ignored: tuple[str, ...] = ()  # namespace/name of objects of other kinds
    undecodable: tuple[str, ...] = ()  # filter chains whose manager is left as it was
    # Parts of the listener that must come back byte for byte (taken from input and output).
    unchanged: Callable[[Listener], list[bytes]] | None = None
    # Envoy rejects this listener whatever the hook does: the answer must be rejected with
    # the very error the input is rejected with (a substring of it here).
    envoy_rejects: str | None = None
    # Holds bytes this build cannot read (unknown types, unknown fields): JSON cannot carry
    # them, so Envoy reads the exact bytes from a binary bootstrap.
    opaque: bool = False
    check: Callable[[Listener], None] | None = None  # anything else this case must show


# --- Building blocks ---------------------------------------------------------------------------

DROP = object()  # as a field value: leave the field out


def document(name: str = "hostile", *, spec: Any = None, metadata: Any = None, **top: Any) -> bytes:
    """A ListenerContextExample with some fields changed, as JSON bytes.

    `spec` and `metadata` are a mapping of fields to change, or DROP to leave the whole
    object out, or any other value to stand in for it; in a mapping (and for the top-level
    fields given by keyword) DROP leaves that field out. By default the policy is valid:
    user `<name>`, password `<name>-password`.
    """
    body: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"targetRefs": GATEWAY, "username": name, "password": f"{name}-password"},
    }
    for key, changes in (("metadata", metadata), ("spec", spec)):
        if changes is DROP:
            del body[key]
        elif isinstance(changes, Mapping):
            _change(body[key], changes)
        elif changes is not None:
            body[key] = changes
    _change(body, top)
    if isinstance(body.get("spec"), dict):
        remember(body["spec"].get("password"))
    return json.dumps(body).encode()


def _change(target: dict[str, Any], changes: Mapping[str, Any]) -> None:
    for key, value in changes.items():
        if value is DROP:
            target.pop(key, None)
        else:
            target[key] = value


def other_kind(api_version: str, kind: str, name: str, namespace: str = "default") -> bytes:
    return json.dumps(
        {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"anything": True},
        }
    ).encode()


def field_bytes(number: int, payload: bytes) -> bytes:
    """A length-delimited field `number` no Envoy message has: what a newer Envoy might add."""

    def varint(value: int) -> bytes:
        out = bytearray()
        while True:
            low, value = value & 0x7F, value >> 7
            out.append(low | (0x80 if value else 0))
            if not value:
                return bytes(out)

    return varint(number << 3 | 2) + varint(len(payload)) + payload


def unknown_fields(message: Any) -> list[bytes]:
    """The message's own unknown fields, as (number, wire type, payload) rendered to bytes."""
    return [
        f"{item.field_number}/{item.wire_type}:".encode() + bytes(item.data)
        for item in UnknownFieldSet(message)
    ]


def the_manager(listener: Listener, chain: Any = None) -> Any:
    """The (first) decoded HTTP connection manager of the default chain or of `chain`."""
    hcm = hcm_pb2.HttpConnectionManager()
    chain = chain if chain is not None else listener.default_filter_chain
    assert chain.filters[-1].typed_config.Unpack(hcm)
    return hcm


def repack(listener: Listener, hcm: Any, chain: Any = None) -> Listener:
    chain = chain if chain is not None else listener.default_filter_chain
    chain.filters[-1].typed_config.Pack(hcm)
    return listener


# --- Listeners ---------------------------------------------------------------------------------


def without_chains() -> Listener:
    listener = listener_pb2.Listener(name="no-chains")
    listener.address.socket_address.address = "0.0.0.0"
    listener.address.socket_address.port_value = 10080
    return listener


def undecodable_manager(value: bytes = b"\xff\xff\xff\x07garbage") -> Listener:
    listener = http_listener()
    listener.default_filter_chain.filters[0].typed_config.value = value
    return listener


def truncated_manager() -> Listener:
    listener = http_listener(*eg_security_filters())
    network = listener.default_filter_chain.filters[0]
    network.typed_config.value = network.typed_config.value[:37]
    return listener


def undecodable_beside_decodable() -> Listener:
    listener = https_listener("broken", "fine")
    listener.filter_chains[0].filters[0].typed_config.value = b"\x0a\xff\xff\xff\xff"
    return listener


def manager_with_foreign_type_host() -> Listener:
    listener = http_listener()
    network = listener.default_filter_chain.filters[0]
    network.typed_config.type_url = network.typed_config.type_url.replace(
        "type.googleapis.com", "example.com/some/path"
    )
    return listener


def manager_with_bare_type_url() -> Listener:
    """A type URL without '/': neither protobuf nor Envoy will unpack it."""
    listener = http_listener()
    network = listener.default_filter_chain.filters[0]
    network.typed_config.type_url = network.typed_config.type_url.rpartition("/")[2]
    return listener


def manager_as_typed_struct(message: Any) -> Listener:
    """The manager written as a TypedStruct: Envoy runs it exactly like the typed form."""
    listener = http_listener(*eg_security_filters())
    config = json_format.MessageToDict(the_manager(listener), preserving_proto_field_name=True)
    return with_struct_manager(listener, config, message)


def with_struct_manager(
    listener: Listener, config: dict[str, Any], message: Any = typed_struct_pb2.TypedStruct
) -> Listener:
    """`listener` with its default chain's manager replaced by `config` in a TypedStruct."""
    typed_struct = message(type_url=HCM_URL)
    typed_struct.value.update(config)
    listener.default_filter_chain.filters[0].typed_config.Pack(typed_struct)
    return listener


def struct_manager(listener: Listener) -> dict[str, Any]:
    """The default chain's TypedStruct manager, as JSON."""
    typed_struct = typed_struct_pb2.TypedStruct.FromString(
        listener.default_filter_chain.filters[0].typed_config.value
    )
    config: dict[str, Any] = json_format.MessageToDict(typed_struct.value)
    return config


def manager_behind_a_null() -> Listener:
    """A TypedStruct manager with `http_filters: null` beside `httpFilters: [...]`, and the
    same for its upgrade configs: JSON null means "not set", so Envoy runs the other list."""
    listener = http_listener(*eg_security_filters())
    config = json_format.MessageToDict(the_manager(listener))  # camelCase, as proto3 JSON
    config["http_filters"] = config["upgrade_configs"] = None
    router = config["httpFilters"][-1]
    config["upgradeConfigs"] = [{"upgradeType": "websocket", "filters": [router]}]
    return with_struct_manager(listener, config)


def behind_a_null_is_protected(listener: Listener) -> None:
    config = struct_manager(listener)
    assert config["http_filters"] is None and config["upgrade_configs"] is None
    names = [entry["name"] for entry in config["httpFilters"]]
    assert names.count(FILTER_NAME) == 1
    assert names.index(FILTER_NAME) < names.index("envoy.filters.http.router")
    (upgrade,) = config["upgradeConfigs"]
    assert [entry["name"] for entry in upgrade["filters"]] == [
        FILTER_NAME,
        "envoy.filters.http.router",
    ]


def manager_of_single_objects() -> Listener:
    """A TypedStruct manager with one object where a list belongs: Envoy's JSON reader takes
    it as a list of one, so this manager runs the router, and a WebSocket upgrade too."""
    listener = http_listener()
    config = json_format.MessageToDict(the_manager(listener), preserving_proto_field_name=True)
    (router,) = config["http_filters"]
    config["http_filters"] = router
    config["upgrade_configs"] = {"upgrade_type": "websocket", "filters": router}
    return with_struct_manager(listener, config)


def single_objects_are_protected(listener: Listener) -> None:
    config = struct_manager(listener)
    expected = [FILTER_NAME, "envoy.filters.http.router"]
    assert [entry["name"] for entry in config["http_filters"]] == expected
    (upgrade,) = config["upgrade_configs"]
    assert [entry["name"] for entry in upgrade["filters"]] == expected


def struct_filter_names(listener: Listener) -> tuple[list[str], str]:
    """The filter names of a TypedStruct manager, and the users of our filter in it."""
    config = struct_manager(listener)
    names = [entry["name"] for entry in config["http_filters"]]
    (ours,) = [entry for entry in config["http_filters"] if entry["name"] == FILTER_NAME]
    return names, ours["typed_config"]["users"]["inline_string"]


def typed_struct_is_protected(listener: Listener) -> None:
    names, users = struct_filter_names(listener)
    assert names.count(FILTER_NAME) == 1
    assert names.index(FILTER_NAME) < names.index("envoy.filters.http.router")
    assert users == f"alice:{sha('alice-neighbour-pw')}\n"


def unknown_http_filter() -> Listener:
    """An HTTP filter of a type this build does not know, marked optional so Envoy may skip it."""
    listener = http_listener(*eg_security_filters())
    hcm = the_manager(listener)
    unknown = hcm_pb2.HttpFilter(name="vendor.example.unknown", is_optional=True)
    unknown.typed_config.type_url = UNKNOWN_URL
    unknown.typed_config.value = OPAQUE_BYTES
    hcm.http_filters.insert(0, unknown)
    return repack(listener, hcm)


def unknown_metadata() -> Listener:
    listener = http_listener()
    for metadata in (listener.metadata, listener.default_filter_chain.metadata):
        value = metadata.typed_filter_metadata["example.vendor"]
        value.type_url, value.value = UNKNOWN_URL, OPAQUE_BYTES
    return listener


def unknown_network_and_listener_filters() -> Listener:
    listener = http_listener()
    listener_filter = listener.listener_filters.add(name="vendor.listener")
    listener_filter.typed_config.type_url, listener_filter.typed_config.value = (
        UNKNOWN_URL,
        OPAQUE_BYTES,
    )
    network = listener_components_pb2.Filter(name="vendor.network")
    network.typed_config.type_url, network.typed_config.value = UNKNOWN_URL, OPAQUE_BYTES
    listener.default_filter_chain.filters.insert(0, network)
    return listener


def unknown_fields_everywhere() -> Listener:
    """Fields a newer Envoy may have: in the listener, a chain, the manager, a filter config."""
    listener = https_listener("web")
    tcp = listener.filter_chains.add(name="tcproute/default/db")
    tcp.filters.append(tcp_proxy())
    tcp.CopyFrom(type(tcp).FromString(tcp.SerializeToString() + field_bytes(9999, b"chain+")))
    hcm = the_manager(listener, listener.filter_chains[0])
    router = hcm.http_filters[-1]
    router.typed_config.value += field_bytes(9999, b"router+")
    hcm = type(hcm).FromString(hcm.SerializeToString() + field_bytes(9999, b"manager+"))
    repack(listener, hcm, listener.filter_chains[0])
    return listener_pb2.Listener.FromString(
        listener.SerializeToString() + field_bytes(9999, b"listener+")
    )


def unknown_field_parts(listener: Listener) -> list[bytes]:
    web, tcp = listener.filter_chains
    hcm = the_manager(listener, web)
    (router,) = [f for f in hcm.http_filters if f.name == "envoy.filters.http.router"]
    return [
        *unknown_fields(listener),
        *unknown_fields(hcm),
        tcp.SerializeToString(),
        router.SerializeToString(),
    ]


def with_stale_copy_of_our_filter() -> Listener:
    """A listener that already carries our filter, with a user who is no longer there."""
    remember("mallory-stale-pw")
    stale = basic_auth_pb2.BasicAuth(forward_username_header="X-Stale")
    stale.users.inline_string = f"mallory:{sha('mallory-stale-pw')}\n"
    return http_listener(http_filter(FILTER_NAME, stale), *eg_security_filters())


def websocket_upgrade() -> Listener:
    listener = http_listener()
    hcm = the_manager(listener)
    upgrade = hcm.upgrade_configs.add(upgrade_type="websocket")
    upgrade.filters.append(hcm.http_filters[-1])
    return repack(listener, hcm)


def upgrade_is_protected(listener: Listener) -> None:
    (upgrade,) = the_manager(listener).upgrade_configs
    assert [f.name for f in upgrade.filters] == [FILTER_NAME, "envoy.filters.http.router"]


def many_chains_and_tcp() -> Listener:
    listener = https_listener(*(f"s{k}" for k in range(50)))
    listener.filter_chains.add(name="tcproute/default/db").filters.append(tcp_proxy())
    return listener


def http3() -> Listener:
    """HTTP/3 as Envoy Gateway writes it: UDP, QUIC options, a QUIC transport per chain."""
    listener = as_http3(https_listener("h3", "h3-admin"))
    for chain in listener.filter_chains:
        hcm = the_manager(listener, chain)
        hcm.codec_type = hcm.HTTP3
        hcm.http3_protocol_options.SetInParent()
        repack(listener, hcm, chain)
    return listener


def whole(listener: Listener) -> list[bytes]:
    return [listener.SerializeToString()]


# --- The corpus --------------------------------------------------------------------------------

CASES: list[HostileCase] = []


def case(
    id: str, *resources: bytes, listener: Listener | None = None, **expected: Any
) -> HostileCase:
    made = HostileCase(
        id=id,
        listener=listener if listener is not None else http_listener(),
        resources=resources,
        admitted=expected.pop("admitted", ALICE),
        **expected,
    )
    CASES.append(made)
    return made


def unreadable(id: str, data: bytes) -> None:
    """Bytes that are not one JSON object: rejected as a whole, the neighbour still admitted."""
    case(id, data, NEIGHBOUR, rejected=(Rejected(UNREADABLE, "unstructured_bytes"),))


# Bytes that are not JSON, or JSON that is not an object.
unreadable("truncated-json-is-rejected", policy("truncated", "bob", "bob-truncated")[:70])
unreadable("bytes-that-are-not-utf-8-are-rejected", b"\xff\xfe\x00\x81{garbage")
unreadable("binary-noise-is-rejected", bytes(range(256)) * 4)
unreadable("empty-bytes-are-rejected", b"")
unreadable("yaml-instead-of-json-is-rejected", b"apiVersion: v1\nkind: ListenerContextExample\n")
unreadable("json-nested-a-hundred-thousand-deep-is-rejected", b"[" * 100_000 + b"]" * 100_000)
unreadable(
    "a-policy-with-a-user-name-nested-fifty-thousand-deep-is-rejected",
    document(spec={"username": DROP}).replace(
        b'"spec": {', b'"spec": {"username": ' + b"[" * 50_000 + b"]" * 50_000 + b", "
    ),
)
unreadable(
    "a-policy-with-a-number-of-five-thousand-digits-is-rejected",
    document(spec={"username": DROP}).replace(
        b'"spec": {', b'"spec": {"username": ' + b"7" * 5000 + b", "
    ),
)
unreadable("a-json-array-is-rejected", b'[{"kind": "ListenerContextExample"}]')
unreadable("a-json-string-is-rejected", b'"ListenerContextExample"')
unreadable("a-json-number-is-rejected", b"42")
unreadable("json-null-is-rejected", b"null")
unreadable("json-true-is-rejected", b"true")


def malformed(
    subject: str, data: bytes, ref: str, field: str, reason: str = "MalformedPolicyError"
) -> None:
    """A policy with one bad field: rejected naming it, the neighbour still admitted."""
    case(f"{subject}-is-rejected", data, NEIGHBOUR, rejected=(Rejected(ref, field, reason),))


# Missing or wrong-typed fields: the error names the policy and the field.
malformed("a-policy-without-metadata", document(metadata=DROP), UNREADABLE, "metadata")
malformed("a-policy-named-by-a-number", document(metadata={"name": 7}), UNREADABLE, "metadata.name")
malformed(
    "a-policy-in-a-namespace-that-is-no-kubernetes-name",
    document(metadata={"namespace": "Team_A"}),
    UNREADABLE,
    "metadata.namespace",
)
malformed(
    "a-creation-timestamp-that-is-a-number",
    document("stamped", metadata={"creationTimestamp": 1700000000}),
    "default/stamped",
    "metadata.creationTimestamp",
)
malformed(
    "a-policy-without-api-version-and-kind",
    document("kindless", apiVersion=DROP, kind=DROP),
    "default/kindless",
    "apiVersion/kind",
)
malformed(
    "our-kind-in-a-version-we-do-not-serve",
    document("future", apiVersion="example.extensions.io/v9"),
    "default/future",
    "apiVersion",
)
malformed("a-policy-without-spec", document("specless", spec=DROP), "default/specless", "spec")
malformed("a-spec-that-is-a-list", document("listed", spec=["a"]), "default/listed", "spec")
malformed(
    "a-spec-without-username",
    document("nameless", spec={"username": DROP}),
    "default/nameless",
    "spec.username",
)
malformed(
    "a-username-that-is-a-number",
    document("numbered", spec={"username": 7}),
    "default/numbered",
    "spec.username",
)
malformed(
    "a-spec-without-password", document("open", spec={"password": DROP}), "default/open", "spec"
)
malformed(
    "a-password-that-is-a-list",
    document("pwlist", spec={"password": ["pw"]}),
    "default/pwlist",
    "spec.password",
)
malformed(
    "a-spec-with-both-password-and-password-from",
    document("twofold", spec={"passwordFrom": {"vault": {"path": "secret/data/x", "key": "k"}}}),
    "default/twofold",
    "spec",
)
malformed(
    "target-refs-that-are-a-string",
    document("tstr", spec={"targetRefs": "eg"}),
    "default/tstr",
    "spec.targetRefs",
)
malformed(
    "a-target-ref-that-is-a-string",
    document("tentry", spec={"targetRefs": ["eg"]}),
    "default/tentry",
    "spec.targetRefs[0]",
)
malformed(
    "a-target-ref-without-a-name",
    document("tname", spec={"targetRefs": [{"kind": "Gateway"}]}),
    "default/tname",
    "spec.targetRefs[0].name",
)
malformed(
    "a-section-name-that-is-a-number",
    document("tsection", spec={"targetRefs": [{"name": "eg", "sectionName": 443}]}),
    "default/tsection",
    "spec.targetRefs[0].sectionName",
)
malformed(
    "a-forward-header-that-is-a-number",
    document("hnum", spec={"forwardUsernameHeader": 7}),
    "default/hnum",
    "spec.forwardUsernameHeader",
    "InvalidHeaderError",
)
malformed(
    "a-forward-header-that-http-owns",
    document("hauth", spec={"forwardUsernameHeader": "Authorization"}),
    "default/hauth",
    "spec.forwardUsernameHeader",
    "InvalidHeaderError",
)
malformed(
    "a-credentials-revision-that-is-a-number",
    document("rev", spec={"credentialsRevision": 7}),
    "default/rev",
    "spec.credentialsRevision",
)
malformed(
    "a-password-from-that-names-no-store",
    document("nostore", spec={"password": DROP, "passwordFrom": {}}),
    "default/nostore",
    "spec.passwordFrom",
)
malformed(
    "users-from-beside-a-username",
    document("mixed", spec={"password": DROP, "usersFrom": {"vault": {"path": "secret/data/t"}}}),
    "default/mixed",
    "spec.username",
)

# Unknown fields: a typo must not pass silently; what Kubernetes adds is fine.
malformed(
    "an-unknown-spec-field", document("typo", spec={"passwrd": "x"}), "default/typo", "spec.passwrd"
)
malformed(
    "an-unknown-target-ref-field",
    document("tport", spec={"targetRefs": [{"name": "eg", "port": 443}]}),
    "default/tport",
    "spec.targetRefs[0].port",
)
malformed(
    "an-unknown-vault-field",
    document(
        "vmount",
        spec={"password": DROP, "passwordFrom": {"vault": {"path": "p", "key": "k", "mount": "x"}}},
    ),
    "default/vmount",
    "spec.passwordFrom.vault.mount",
)
case(
    "the-fields-kubernetes-adds-are-accepted",
    document(
        "bookkept",
        metadata={
            "uid": "0b5c7d1e-0000-4000-8000-000000000000",
            "resourceVersion": "12345",
            "generation": 3,
            "labels": {"team": "a"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
            "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
            "creationTimestamp": "2024-01-01T00:00:00Z",
        },
        status={"conditions": [{"type": "Accepted", "status": "True"}]},
    ),
    NEIGHBOUR,
    admitted={**ALICE, "bookkept": "bookkept-password"},
)

# Huge strings: rejected without the value being copied into the error or the log.
malformed("a-one-mib-name", document(metadata={"name": "n" * MiB}), UNREADABLE, "metadata.name")
malformed(
    "a-one-mib-namespace",
    document(metadata={"namespace": "n" * MiB}),
    UNREADABLE,
    "metadata.namespace",
)
malformed(
    "a-one-mib-forward-header",
    document("hhuge", spec={"forwardUsernameHeader": "X" * MiB}),
    "default/hhuge",
    "spec.forwardUsernameHeader",
    "InvalidHeaderError",
)
malformed(
    "a-one-mib-user-name",
    document("uhuge", spec={"username": "u" * MiB}),
    "default/uhuge",
    "spec.username",
    "InvalidUsernameError",
)
malformed(
    "a-one-mib-unknown-field-name",
    document("fhuge", spec={"f" * MiB: 1}),
    "default/fhuge",
    "spec." + "f" * 40,
)
malformed(
    "a-one-mib-credentials-revision",
    document("rhuge", spec={"credentialsRevision": "r" * MiB}),
    "default/rhuge",
    "spec.credentialsRevision",
)
case(
    "an-object-of-another-kind-with-a-one-mib-kind-is-ignored",
    other_kind("example.com/v1", "K" * MiB, "huge-kind"),
    NEIGHBOUR,
    ignored=("default/huge-kind",),
)

# Many policies in one call.
BULK = 10_000
case(
    "ten-thousand-policies-in-one-call-all-admitted",
    # Passwords under six characters are not remembered for the log scan (10 000 needles
    # would make it slow); the scan still catches any {SHA} hash in a log line.
    *(policy(f"bulk-{i:05d}", f"bulk-user-{i:05d}", f"b{i:04x}") for i in range(BULK)),
    admitted={f"bulk-user-{i:05d}": f"b{i:04x}" for i in range(BULK)},
)
CLAIMANTS = 100
OLDEST = 37  # not the first by name, nor by position
case(
    "one-user-claimed-by-a-hundred-policies-the-oldest-wins",
    *(
        policy(
            f"claim-{i:03d}",
            "admin",
            f"admin-claim-{i:03d}",
            created=f"{2020 if i == OLDEST else 2021 + i % 3}-01-01T00:00:{i % 60:02d}Z",
        )
        for i in range(CLAIMANTS)
    ),
    NEIGHBOUR,
    admitted={**ALICE, "admin": f"admin-claim-{OLDEST:03d}"},
    rejected=tuple(
        Rejected(f"default/claim-{i:03d}", "spec.username", "ConflictError")
        for i in range(CLAIMANTS)
        if i != OLDEST
    ),
)
case(
    "same-age-claims-are-settled-by-namespace-then-name",
    policy("zed", "admin", "admin-zed-pw", namespace="team-a"),
    policy("abe", "admin", "admin-abe-pw", namespace="team-b"),
    # a chain no Gateway's name is on: every namespace's policy applies there
    listener=http_listener(name="shared-by-every-namespace"),
    admitted={"admin": "admin-zed-pw"},
    rejected=(Rejected("team-b/abe", "spec.username", "ConflictError"),),
)
case(
    "the-same-policy-sent-twice-admits-its-user-once",
    NEIGHBOUR,
    NEIGHBOUR,
    rejected=(Rejected("default/valid-neighbour", "spec.username", "ConflictError"),),
)

# User names: what Envoy or RFC 7617 cannot take is rejected; printable Unicode works.
HOSTILE_USER_NAMES = {
    "a-colon": "ev:il",
    "a-newline": "ev\nil",
    "a-carriage-return": "ev\ril",
    "a-trailing-carriage-return": "evil\r",
    "a-nul": "ev\x00il",
    "a-leading-hash": "#evil",
    "a-leading-space": " evil",
    "a-trailing-space": "evil ",
    "a-tab": "ev\til",
    "a-del": "ev\x7fil",
    "a-c1-control": "ev\x85il",
    "a-zero-width-space": "ev\u200bil",
    "a-right-to-left-override": "\u202eevil",
    "a-lone-surrogate": "ev\ud800il",
    "a-name-not-in-nfc": "ju\u0308rgen",
    "a-name-over-256-bytes": "é" * 129,
    "an-empty-name": "",
}
for label, username in HOSTILE_USER_NAMES.items():
    case(
        f"a-user-name-with-{label}-is-rejected".replace("-with-an-empty-name", "-that-is-empty"),
        policy("hostile-name", username, "hostile-name-pw"),
        NEIGHBOUR,
        rejected=(Rejected("default/hostile-name", "spec.username", "InvalidUsernameError"),),
    )
PRINTABLE_USER_NAMES = {
    "latin": "jürgen",
    "japanese": "ユーザー",
    "emoji": "smile-😀",
    "greek": "Ωmega",
    "inner-space-and-hash": "a b#c",
}
for label, username in PRINTABLE_USER_NAMES.items():
    case(
        f"a-printable-{label}-user-name-is-admitted",
        policy("printable", username, "printable-pw"),
        NEIGHBOUR,
        admitted={**ALICE, username: "printable-pw"},
    )

# Passwords.
HOSTILE_PASSWORDS = {
    "empty": "",
    "two-mib-long": "p" * (2 * MiB),
    "one-byte-over-4096": "p" * 4097,
    "holding-a-newline": "pass\nword-x",
    "holding-a-nul": "pass\x00word-x",
}
for label, password in HOSTILE_PASSWORDS.items():
    case(
        f"a-password-{label}-is-rejected",
        policy("weak", "bob", password),
        NEIGHBOUR,
        rejected=(Rejected("default/weak", "spec.password", "InvalidPasswordError"),),
    )
USABLE_PASSWORDS = {
    "of-exactly-4096-utf8-bytes": "é" * 2048,
    "in-unicode": "pässwörd-ユーザー",
    "with-spaces-at-both-ends": " spaced pw ",
    "shaped-like-a-sha-hash": "{SHA}V7KtmQRNM3GXwMOf04I1aP+B5Io=",  # hashed like any other
}
for label, password in USABLE_PASSWORDS.items():
    case(
        f"a-password-{label}-is-accepted",
        policy("usable", "bob", password),
        NEIGHBOUR,
        admitted={**ALICE, "bob": password},
    )

# Objects of other kinds: ignored, as documented; alone they admit nobody.
case(
    "a-configmap-is-ignored",
    other_kind("v1", "ConfigMap", "eg-config", "envoy-gateway-system"),
    NEIGHBOUR,
    ignored=("envoy-gateway-system/eg-config",),
)
case(
    "a-security-policy-is-ignored",
    other_kind("gateway.envoyproxy.io/v1alpha1", "SecurityPolicy", "sp"),
    NEIGHBOUR,
    ignored=("default/sp",),
)
case(
    "another-kind-of-our-group-is-ignored",
    other_kind(API_VERSION, "ListenerContextExampleList", "lookalike"),
    NEIGHBOUR,
    ignored=("default/lookalike",),
)
case(
    "only-objects-of-other-kinds-admit-nobody",
    other_kind("v1", "ConfigMap", "only"),
    admitted={},
    ignored=("default/only",),
)

# Listeners.
case(
    "a-listener-without-any-filter-chain-comes-back-unchanged",
    document("chainless"),
    NEIGHBOUR,
    b"{broken",
    listener=without_chains(),
    rejected=(Rejected("<unknown>/extension_resources[2]", "unstructured_bytes"),),
    unchanged=whole,
    envoy_rejects="no filter chains specified",
)
case(
    "a-manager-of-garbage-bytes-is-left-unchanged-and-reported",
    NEIGHBOUR,
    listener=undecodable_manager(),
    undecodable=("default/eg/http",),
    unchanged=whole,
    envoy_rejects="Unable to unpack as envoy.extensions.filters.network.http_connection_manager",
    opaque=True,
)
case(
    "a-truncated-manager-is-left-unchanged-and-reported",
    NEIGHBOUR,
    listener=truncated_manager(),
    undecodable=("default/eg/http",),
    unchanged=whole,
    envoy_rejects="Unable to unpack as envoy.extensions.filters.network.http_connection_manager",
    opaque=True,
)
case(
    "a-garbage-manager-beside-a-good-one-leaves-the-good-one-protected",
    NEIGHBOUR,
    listener=undecodable_beside_decodable(),
    undecodable=("default/eg/broken",),
    unchanged=lambda listener: [listener.filter_chains[0].SerializeToString()],
    envoy_rejects="Unable to unpack as envoy.extensions.filters.network.http_connection_manager",
    opaque=True,
)
case(
    "a-manager-whose-type-url-names-another-host-is-protected",
    NEIGHBOUR,
    listener=manager_with_foreign_type_host(),
)
case(
    "a-manager-whose-type-url-has-no-slash-is-left-unchanged-and-reported",
    NEIGHBOUR,
    listener=manager_with_bare_type_url(),
    undecodable=("default/eg/http",),
    unchanged=whole,
    envoy_rejects="Unable to unpack as envoy.extensions.filters.network.http_connection_manager",
    opaque=True,
)
case(
    "a-manager-written-as-an-xds-typed-struct-is-protected",
    NEIGHBOUR,
    listener=manager_as_typed_struct(typed_struct_pb2.TypedStruct),
    check=typed_struct_is_protected,
)
case(
    "a-manager-written-as-a-udpa-typed-struct-is-protected",
    NEIGHBOUR,
    listener=manager_as_typed_struct(udpa_typed_struct_pb2.TypedStruct),
    check=typed_struct_is_protected,
)
case(
    "a-typed-struct-manager-hiding-its-filters-behind-a-null-is-protected",
    NEIGHBOUR,
    listener=manager_behind_a_null(),
    check=behind_a_null_is_protected,
)
case(
    "a-typed-struct-manager-with-single-objects-for-its-lists-is-protected",
    NEIGHBOUR,
    listener=manager_of_single_objects(),
    check=single_objects_are_protected,
)
case(
    "an-http-filter-of-an-unknown-type-passes-byte-for-byte",
    NEIGHBOUR,
    listener=unknown_http_filter(),
    unchanged=lambda listener: [the_manager(listener).http_filters[0].SerializeToString()],
    opaque=True,
)
case(
    "metadata-of-an-unknown-type-passes-byte-for-byte",
    NEIGHBOUR,
    listener=unknown_metadata(),
    unchanged=lambda listener: [
        listener.metadata.SerializeToString(),
        listener.default_filter_chain.metadata.SerializeToString(),
    ],
    opaque=True,
)
case(
    "network-and-listener-filters-of-an-unknown-type-pass-byte-for-byte",
    NEIGHBOUR,
    listener=unknown_network_and_listener_filters(),
    unchanged=lambda listener: [
        listener.listener_filters[0].SerializeToString(),
        listener.default_filter_chain.filters[0].SerializeToString(),
    ],
    envoy_rejects="Didn't find a registered implementation",
    opaque=True,
)
case(
    "unknown-fields-inside-known-messages-pass-byte-for-byte",
    NEIGHBOUR,
    listener=unknown_fields_everywhere(),
    unchanged=unknown_field_parts,
    opaque=True,
)
case(
    "a-stale-copy-of-our-filter-is-replaced-not-kept",
    NEIGHBOUR,
    listener=with_stale_copy_of_our_filter(),
)
case(
    "a-websocket-upgrade-with-its-own-filters-authenticates-too",
    NEIGHBOUR,
    listener=websocket_upgrade(),
    check=upgrade_is_protected,
)
case(
    "fifty-https-chains-are-protected-and-a-tcp-chain-is-untouched",
    NEIGHBOUR,
    listener=many_chains_and_tcp(),
    unchanged=lambda listener: [listener.filter_chains[-1].SerializeToString()],
)
case("an-http3-listener-is-protected", NEIGHBOUR, listener=http3())

assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"
