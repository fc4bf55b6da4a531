"""Step 1, parse: Kubernetes objects (JSON bytes, as Envoy Gateway sends them) to Policy values.

Only the shape is checked here (types, required fields, known fields). What Envoy would
reject in a user name or password is checked when the table is compiled, because user
names also come from secret stores.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from compiler.errors import (
    InvalidHeaderError,
    MalformedPolicyError,
    NoTargetError,
    PolicyError,
    internal_error,
)
from compiler.exemptions import read_exemptions
from compiler.model import (
    POLICY_GROUP,
    POLICY_KIND,
    POLICY_VERSION,
    AwsSecretRef,
    CredentialSpec,
    Exemption,
    KvEngine,
    PasswordFrom,
    PlainCredentials,
    Policy,
    PolicyRef,
    Secret,
    StoreRef,
    TargetRef,
    UsersFrom,
    VaultRef,
)

GATEWAY_GROUP = "gateway.networking.k8s.io"
DEFAULT_NAMESPACE = "default"  # what kubectl uses when a manifest names none

# metadata.name / namespace: Kubernetes DNS-1123 subdomain rules (also keeps logs clean).
_K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
# RFC 9110 field-name token.
_HEADER_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")
# forwardUsernameHeader carries a user name to the backend, which takes it as a fact about
# the request. It must not be a header that already states something else the backend or
# a proxy relies on. The rule, in three families (the CRD states the same rule):
# - headers HTTP itself owns: hop-by-hop and framing (RFC 9110 7.6.1, 6.1), Host, and
#   credentials (Authorization, Proxy-Authorization);
# - headers proxies write about the connection and the client: Forwarded and the whole
#   X-Forwarded-* family (RFC 7239 and its predecessors), Via, the client-address headers
#   of common proxies and CDNs (X-Real-IP, True-Client-IP, ...);
# - headers that tie a request to others: request ids and trace context (W3C, B3, ...),
#   and Envoy's own x-envoy-* namespace, which Envoy trusts from a trusted hop.
_RESERVED_HEADERS = frozenset(
    {
        # HTTP
        "authorization",
        "connection",
        "content-length",
        "host",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        # the connection and the client, as proxies record them
        "forwarded",
        "via",
        "x-real-ip",
        "x-client-ip",
        "true-client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
        "x-cluster-client-ip",
        "x-original-forwarded-for",
        # request identity and trace context
        "x-request-id",
        "traceparent",
        "tracestate",
        "b3",
        "x-ot-span-context",
        "x-cloud-trace-context",
        "x-amzn-trace-id",
        "grpc-trace-bin",
    }
)
_RESERVED_HEADER_PREFIXES = ("x-forwarded-", "x-envoy-", "x-b3-", "x-datadog-")
_SPEC_FIELDS = frozenset(
    {
        "targetRefs",
        "username",
        "password",
        "passwordFrom",
        "usersFrom",
        "forwardUsernameHeader",
        "credentialsRevision",
        "exemptions",
        "hideCredentials",
    }
)
_SOURCES = ("password", "passwordFrom", "usersFrom")
MAX_REVISION_LENGTH = 128
MAX_UID_LENGTH = 128
_VAULT_FIELDS = frozenset({"path", "engine", "key", "version"})
_AWS_FIELDS = frozenset({"secretId", "key", "versionStage", "versionId"})
_TARGET_FIELDS = frozenset({"group", "kind", "name", "sectionName"})
MAX_TARGETS = 16  # the CRD's maxItems


@dataclass(frozen=True)
class IgnoredResource:
    """An object of another kind, which this server does not handle."""

    api_version: str
    kind: str
    ref: PolicyRef


ParsedResource = Policy | IgnoredResource | PolicyError


def parse_resources(
    raw: Sequence[bytes], sources: Sequence[str] | None = None
) -> list[ParsedResource]:
    """Parse every extension resource; one bad object never affects the others.

    `sources` names where each object came from (a file, for the CLI); by default its
    position in the hook call.
    """
    return [
        _parse_or_error(data, sources[index] if sources else f"extension_resources[{index}]")
        for index, data in enumerate(raw)
    ]


def _parse_or_error(data: bytes, source: str) -> ParsedResource:
    """One object parsed, or its PolicyError: whatever goes wrong inside, never more.

    The rules below raise MalformedPolicyError for everything they foresee; anything else
    (a bug, an input no rule thought of) still costs only this object.
    """
    try:
        return parse_resource(data, source)
    except PolicyError as error:
        return error
    except Exception as error:
        return internal_error(PolicyRef("<unknown>", source), "unstructured_bytes", error)


def parse_resource(data: bytes, source: str = "extension_resources[0]") -> Policy | IgnoredResource:
    """Parse one object; raise MalformedPolicyError naming the policy and field."""
    position = PolicyRef("<unknown>", source)
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, ValueError) as error:
        raise MalformedPolicyError(
            position,
            "unstructured_bytes",
            f"is not valid JSON ({error.__class__.__name__})",
            "Envoy Gateway should send one Kubernetes object as JSON",
        ) from None
    except RecursionError:
        # json.loads recurses once per nested array or object: a few kilobytes of '['
        # exhaust the interpreter's stack. That is one bad object, not a failed call.
        raise MalformedPolicyError(
            position,
            "unstructured_bytes",
            "nests arrays or objects too deeply to be read",
            "send one Kubernetes object as JSON",
        ) from None
    return parse_object(obj, position)


def parse_object(obj: object, position: PolicyRef) -> Policy | IgnoredResource:
    """Parse one decoded Kubernetes object (also used for YAML manifests by the CLI)."""
    if not isinstance(obj, Mapping):
        raise MalformedPolicyError(
            position,
            "unstructured_bytes",
            f"is a JSON {_type_name(obj)}, not an object",
            "send one Kubernetes object",
        )
    ref = _policy_ref(obj, position)
    api_version = obj.get("apiVersion")
    kind = obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        raise MalformedPolicyError(
            ref,
            "apiVersion/kind",
            "are missing or not strings",
            f"set apiVersion: {POLICY_GROUP}/{POLICY_VERSION} and kind: {POLICY_KIND}",
        )
    group, _, version = api_version.rpartition("/")
    if kind != POLICY_KIND or group != POLICY_GROUP:
        return IgnoredResource(api_version[:100], kind[:100], ref)
    if version != POLICY_VERSION:
        raise MalformedPolicyError(
            ref,
            "apiVersion",
            f"version {version[:20]!r} is not supported",
            f"use {POLICY_GROUP}/{POLICY_VERSION}",
        )
    return _parse_policy(obj, ref)


def _policy_ref(obj: Mapping[str, Any], position: PolicyRef) -> PolicyRef:
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        raise MalformedPolicyError(position, "metadata", "is missing", "set metadata.name")
    name = metadata.get("name")
    namespace = metadata.get("namespace", DEFAULT_NAMESPACE)
    for field, value in (("metadata.name", name), ("metadata.namespace", namespace)):
        if not isinstance(value, str) or not _K8S_NAME.fullmatch(value):
            raise MalformedPolicyError(
                position,
                field,
                "is not a valid Kubernetes name",
                "use lower-case letters, digits, '-' and '.' (at most 253 characters)",
            )
    assert isinstance(namespace, str) and isinstance(name, str)
    return PolicyRef(namespace, name)


def _parse_policy(obj: Mapping[str, Any], ref: PolicyRef) -> Policy:
    metadata = obj["metadata"]
    created = metadata.get("creationTimestamp") or ""
    if not isinstance(created, str):
        raise MalformedPolicyError(
            ref, "metadata.creationTimestamp", "is not a string", "leave it to the API server"
        )
    spec = _object(obj.get("spec"), ref, "spec", _SPEC_FIELDS)
    return Policy(
        ref=ref,
        created=created,
        targets=_parse_targets(spec.get("targetRefs"), ref),
        credentials=_parse_credentials(spec, ref),
        forward_username_header=_parse_header(spec.get("forwardUsernameHeader"), ref),
        credentials_revision=_parse_revision(spec.get("credentialsRevision"), ref),
        exemptions=_parse_exemptions(spec.get("exemptions"), ref),
        hide_credentials=_parse_flag(spec.get("hideCredentials"), ref, "spec.hideCredentials"),
        uid=_uid(metadata.get("uid")),
    )


def _parse_exemptions(value: object, ref: PolicyRef) -> tuple[Exemption, ...]:
    """spec.exemptions; any problem rejects the whole policy, as the CRD would: leaving out
    only the bad entry would quietly ask for credentials where its author expected none."""
    exemptions, problems = read_exemptions(value)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise MalformedPolicyError(ref, first.field, first.problem + more, first.fix)
    return exemptions


def _parse_flag(value: object, ref: PolicyRef, field: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise MalformedPolicyError(ref, field, "is not true or false", f"set {field} to true")
    return value


def _uid(value: object) -> str | None:
    """metadata.uid as the API server writes it (a UUID), or None: only Events use it."""
    return value if isinstance(value, str) and 0 < len(value) <= MAX_UID_LENGTH else None


def _parse_revision(value: object, ref: PolicyRef) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= MAX_REVISION_LENGTH:
        raise MalformedPolicyError(
            ref,
            "spec.credentialsRevision",
            "is not a string of 1 to 128 characters",
            "leave this field to the server's rotation watcher",
        )
    return value


def _parse_targets(value: object, ref: PolicyRef) -> tuple[TargetRef, ...]:
    """At least one Gateway: a policy that names none must not apply to everything it reaches
    (whatever let it into the cluster, the CRD's minItems included, may not hold)."""
    if value is None or value == []:
        raise NoTargetError(
            ref,
            "spec.targetRefs",
            "names no Gateway",
            "list the Gateways (and optionally their sectionName) this policy protects",
        )
    if not isinstance(value, list):
        raise MalformedPolicyError(ref, "spec.targetRefs", "is not a list", "list Gateways")
    if len(value) > MAX_TARGETS:
        raise MalformedPolicyError(
            ref,
            "spec.targetRefs",
            f"lists {len(value)} targets, more than {MAX_TARGETS}",
            "split the policy, or target whole Gateways instead of their sections",
        )
    targets = []
    for i, item in enumerate(value):
        field = f"spec.targetRefs[{i}]"
        fields = _object(item, ref, field, _TARGET_FIELDS)
        targets.append(
            TargetRef(
                group=_string(fields, "group", ref, field) or GATEWAY_GROUP,
                kind=_string(fields, "kind", ref, field) or "Gateway",
                name=str(_string(fields, "name", ref, field, required=True)),
                section_name=_string(fields, "sectionName", ref, field),
            )
        )
    return tuple(targets)


def _parse_credentials(spec: Mapping[str, Any], ref: PolicyRef) -> CredentialSpec:
    """Exactly one source: password, passwordFrom or usersFrom."""
    given = [source for source in _SOURCES if spec.get(source) is not None]
    if len(given) != 1:
        problem = "name no credential" if not given else f"name {' and '.join(given)}"
        raise MalformedPolicyError(
            ref, "spec", problem, "set exactly one of password, passwordFrom, usersFrom"
        )
    (source,) = given
    username = spec.get("username")
    if source == "usersFrom":
        if username is not None:
            raise MalformedPolicyError(
                ref,
                "spec.username",
                "cannot be used with usersFrom",
                "the secret names the users; remove spec.username",
            )
        return UsersFrom(_parse_store(spec["usersFrom"], ref, "spec.usersFrom", key_required=False))
    if not isinstance(username, str):
        raise MalformedPolicyError(
            ref, "spec.username", "is missing or not a string", "set the user name to admit"
        )
    if source == "passwordFrom":
        field = "spec.passwordFrom"
        return PasswordFrom(username, _parse_store(spec[source], ref, field, key_required=True))
    password = spec["password"]
    if not isinstance(password, str):
        raise MalformedPolicyError(
            ref, "spec.password", "is not a string", "set the user's password"
        )
    return PlainCredentials(username, Secret(password))


def _parse_store(value: object, ref: PolicyRef, field: str, *, key_required: bool) -> StoreRef:
    if (
        not isinstance(value, Mapping)
        or len(value) != 1
        or not ("vault" in value or "awsSecretsManager" in value)
    ):
        raise MalformedPolicyError(
            ref, field, "must name exactly one store", "use either vault or awsSecretsManager"
        )
    if "vault" in value:
        return _parse_vault(value["vault"], ref, f"{field}.vault", key_required)
    return _parse_aws(value["awsSecretsManager"], ref, f"{field}.awsSecretsManager")


def _parse_vault(value: object, ref: PolicyRef, field: str, key_required: bool) -> VaultRef:
    fields = _object(value, ref, field, _VAULT_FIELDS)
    path = _string(fields, "path", ref, field, required=True)
    engine_name = _string(fields, "engine", ref, field) or KvEngine.V2
    if engine_name not in set(KvEngine):
        raise MalformedPolicyError(
            ref, f"{field}.engine", f"{engine_name[:20]!r} is not supported", "use kv-v2 or kv-v1"
        )
    engine = KvEngine(engine_name)
    key = _string(fields, "key", ref, field, required=key_required)
    version = fields.get("version")
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 1
    ):
        raise MalformedPolicyError(
            ref, f"{field}.version", "is not a positive whole number", "give a KV v2 version"
        )
    if version is not None and engine is KvEngine.V1:
        raise MalformedPolicyError(
            ref, f"{field}.version", "is not available with kv-v1", "remove it or use kv-v2"
        )
    return VaultRef(str(path), engine, key, version)


def _parse_aws(value: object, ref: PolicyRef, field: str) -> AwsSecretRef:
    fields = _object(value, ref, field, _AWS_FIELDS)
    secret_id = _string(fields, "secretId", ref, field, required=True)
    stage = _string(fields, "versionStage", ref, field)
    version_id = _string(fields, "versionId", ref, field)
    if stage and version_id:
        raise MalformedPolicyError(
            ref, field, "names both versionStage and versionId", "keep one of them"
        )
    key = _string(fields, "key", ref, field)
    return AwsSecretRef(str(secret_id), key, stage, version_id)


def _object(value: object, ref: PolicyRef, field: str, known: frozenset[str]) -> Mapping[str, Any]:
    """An object with only `known` fields: an unknown one is a typo that must not pass."""
    if not isinstance(value, Mapping):
        raise MalformedPolicyError(
            ref, field, "is missing or not an object", "see docs/policies.md for its fields"
        )
    unknown = sorted(str(key)[:40] for key in value if key not in known)
    if unknown:
        raise MalformedPolicyError(
            ref,
            f"{field}.{unknown[0]}",
            "is not a known field",
            f"remove it or fix its spelling (known: {', '.join(sorted(known))})",
        )
    return value


def _string(
    fields: Mapping[str, Any], name: str, ref: PolicyRef, field: str, *, required: bool = False
) -> str | None:
    value = fields.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise MalformedPolicyError(
            ref, f"{field}.{name}", "is missing or not a non-empty string", f"set {name}"
        )
    return value


def _parse_header(value: object, ref: PolicyRef) -> str | None:
    if value is None:
        return None
    field = "spec.forwardUsernameHeader"
    if not isinstance(value, str) or not _HEADER_TOKEN.fullmatch(value):
        raise InvalidHeaderError(
            ref,
            field,
            "is not an HTTP header name",
            "use letters, digits and '-' (RFC 9110 token, at most 256 characters)",
        )
    if reserved_header(value):
        raise InvalidHeaderError(
            ref,
            field,
            f"{value!r} is a header that HTTP, proxies or Envoy already give a meaning "
            "(credentials, connection, client address, forwarding, request id or tracing)",
            "choose a header of your own, such as X-Example-Ext",
        )
    return value


def reserved_header(name: str) -> bool:
    """Whether `name` is a header a user name must not be written into (see above)."""
    lowered = name.lower()
    return lowered in _RESERVED_HEADERS or lowered.startswith(_RESERVED_HEADER_PREFIXES)


def _type_name(value: object) -> str:
    return {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), "null" if value is None else type(value).__name__
    )
