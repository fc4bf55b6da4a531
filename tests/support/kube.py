"""A stand-in for the Kubernetes API server, for tests.

Written because no Kubernetes API server (kube-apiserver with etcd, kind, envtest) can be
installed on this machine: tests need something that answers the way the API server does,
driven by the real `lightkube` client. It is an in-memory `http.server` (stdlib only) serving
exactly the resources the product uses, not a Kubernetes.

It follows these parts of the Kubernetes API (kubernetes.io/docs/reference/using-api/
api-concepts, the API conventions, and the apiserver sources where the docs are silent:
the generic registry store, the custom resource strategy, the Lease strategy):

- Resources: `ListenerContextExample` (`example.extensions.io/v1alpha1`, plural
  `listenercontextexamples`, namespaced), served like a CRD without subresources, `Lease`
  (`coordination.k8s.io/v1`, namespaced) and `Event` (`events.k8s.io/v1`, namespaced),
  built-in types. Paths are
  `/apis/<group>/<version>/namespaces/<ns>/<plural>[/<name>]`, plus the cluster-wide list
  `/apis/<group>/<version>/<plural>`.
- Verbs: get; list (`labelSelector` with `=`, `==`, `!=`, `in`, `notin`, `key`, `!key`;
  `fieldSelector` on `metadata.name`/`metadata.namespace`; `limit` and `continue`); create
  (POST, 201); replace (PUT); patch; delete (answers a Success Status); `dryRun=All` on writes.
- Metadata: create sets `uid`, `creationTimestamp` and `resourceVersion`; `generateName` works.
  `resourceVersion` is one global counter (like etcd's revision, a string) bumped by every write
  that changes something: an update or patch that changes nothing is not written and keeps its
  `resourceVersion`, as the API server does. `metadata.generation` (custom resources only; Leases
  have none) starts at 1 and is incremented when anything outside `metadata` changes, the custom
  resource strategy's rule for a CRD without a status subresource: label, annotation or other
  metadata changes never bump it. Clients cannot change `uid`, `creationTimestamp` or
  `generation`.
- Optimistic concurrency: a PUT must carry `metadata.resourceVersion` (422 Invalid without it,
  as `AllowUnconditionalUpdate` is false for both kinds) and a stale one is 409 Conflict; a patch
  is conditional only if it carries `metadata.resourceVersion`. A POST carrying a
  `resourceVersion` is 500 (storage refuses it); an existing name is 409 AlreadyExists. A PUT of
  a missing Lease creates it (`AllowCreateOnUpdate`), of a missing custom resource is 404.
  Delete honours `preconditions` (uid, resourceVersion) in its DeleteOptions body.
- Patches: `application/merge-patch+json` with RFC 7386 semantics (null deletes, objects merge,
  anything else, lists included, replaces). For the Lease and the Event, built-in types,
  `application/strategic-merge-patch+json` is accepted too and applied the same way (neither
  has merge-keyed lists outside `metadata`). Any other patch type is 415.
- Events (events.k8s.io/v1) are validated as the API server validates them
  (pkg/apis/core/validation/events.go, ValidateEventCreate and ValidateEventUpdate): on
  create, `eventTime`, `reportingController` (a qualified name), `reportingInstance`,
  `action` and `reason` are required, the last three at most 128 bytes, `note` at most 1024,
  `type` Normal or Warning, the deprecated core/v1 fields unset, and a `series` has a count
  of at least 2 and a `lastObservedTime`; on update the same, and every field but `series`
  (and metadata) is immutable. Each problem is a cause of a 422 Invalid.
- Errors are Status objects (`kind: Status`, `apiVersion: v1`, `status: Failure`, `message`,
  `reason`, `details` with name/group/kind, `code`) with `Content-Type: application/json`:
  400 BadRequest, 401 Unauthorized, 404 NotFound, 405 MethodNotAllowed, 409 AlreadyExists or
  Conflict, 415 UnsupportedMediaType, 422 Invalid (with `details.causes`), 500, 503.
- Authentication: `Authorization: Bearer <token>` (scheme case-insensitive) with the token the
  stand-in made; a missing or wrong token is 401, as with `--anonymous-auth=false`.

Simplifications, on purpose: every namespace exists; no RBAC (no 403); no watch (a
`watch=true` list is 405: tests poll); no JSON patch, server-side apply, deletecollection, status
or scale subresources, finalizers (delete is immediate) or `managedFields`; no discovery
endpoints; objects are stored as sent (no defaulting, no schema validation unless a `validator`
is given for ListenerContextExamples, whose messages become 422 causes); list items are sorted
by namespace and name. Responses are HTTP/1.0 (one request a connection), so `stop()` really
refuses the next one. Faults: `unavailable` answers 503 to everything, `failing` answers 500
InternalError to everything, `delay` waits before answering, and `hang()` holds every request
unanswered until `release()` (`waiting` says how many are held).
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
import secrets
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, cast
from urllib.parse import parse_qs, unquote, urlsplit

from tests.support.secrets import remember
from tests.support.standin import HttpStandIn, StandInServer

if TYPE_CHECKING:
    from lightkube import Client

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
OPTIMISTIC_LOCK = (
    "the object has been modified; please apply your changes to the latest version and try again"
)
UNAVAILABLE = "the server is currently unable to handle the request"
NOT_FOUND_PATH = "the server could not find the requested resource"
METHOD_NOT_ALLOWED = "the server does not allow this method on the requested resource"
DEFAULT_NAMESPACE = "default"

# RFC 1123 subdomain, as the API server checks metadata.name
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")
_DNS_SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or"
    " '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used"
    " for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
# what names.SimpleNameGenerator appends to generateName
_GENERATED_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_PATH = re.compile(
    r"/apis/(?P<group>[^/]+)/(?P<version>[^/]+)"
    r"(?:/namespaces/(?P<namespace>[^/]+))?"
    r"/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?/?"
)
_LABEL_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_LABEL_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_EXISTS = re.compile(rf"(?P<not>!)?\s*(?P<key>{_LABEL_KEY})")
_EQUALITY = re.compile(rf"(?P<key>{_LABEL_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>{_LABEL_VALUE})")
_SET = re.compile(rf"(?P<key>{_LABEL_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)")
_FIELD = re.compile(r"(?P<key>[A-Za-z0-9_.]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^,]*)")


@dataclass(frozen=True)
class ResourceKind:
    """One resource the stand-in serves; `custom` means served from a CRD."""

    group: str
    version: str
    kind: str
    plural: str
    custom: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def qualified(self) -> str:
        """`<plural>.<group>`, as the API server names a resource in its messages."""
        return f"{self.plural}.{self.group}"


POLICY = ResourceKind(
    "example.extensions.io", "v1alpha1", "ListenerContextExample", "listenercontextexamples", True
)
LEASE = ResourceKind("coordination.k8s.io", "v1", "Lease", "leases", False)
EVENT = ResourceKind("events.k8s.io", "v1", "Event", "events", False)
KINDS = (POLICY, LEASE, EVENT)

# events.k8s.io/v1 validation (pkg/apis/core/validation/events.go)
EVENT_TYPES = ("Normal", "Warning")
EVENT_LIMITS = {"reportingInstance": 128, "action": 128, "reason": 128, "note": 1024}
EVENT_IMMUTABLE = (
    "regarding", "related", "reason", "note", "type", "eventTime", "action",
    "reportingController", "reportingInstance", "deprecatedSource",
    "deprecatedFirstTimestamp", "deprecatedLastTimestamp", "deprecatedCount",
)  # fmt: skip
# The internal names the API server's messages use for events.k8s.io/v1's fields.
EVENT_FIELD_NAMES = {
    "regarding": "involvedObject",
    "note": "message",
    "deprecatedSource": "source",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count",
}
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")

Validator = Callable[[dict[str, Any]], Sequence[str]]


class KubeRequest(NamedTuple):
    method: str
    path: str  # without the query
    query: str
    content_type: str


class KubeStandInError(Exception):
    """A Python helper was refused; `status` is the Status object the API would have sent."""

    def __init__(self, status: dict[str, Any]) -> None:
        super().__init__(f"{status.get('code')} {status.get('reason')}: {status.get('message')}")
        self.status = status


@dataclass(frozen=True)
class _Reply:
    status: int
    body: Any


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: null deletes, objects merge, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _failure(code: int, reason: str, message: str, details: Any = None) -> _Reply:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return _Reply(code, body)


def _details(kind: ResourceKind, name: str, kind_name: str | None = None) -> dict[str, Any]:
    return {"name": name, "group": kind.group, "kind": kind_name or kind.plural}


def _not_found(kind: ResourceKind, name: str) -> _Reply:
    return _failure(404, "NotFound", f'{kind.qualified} "{name}" not found', _details(kind, name))


def _conflict(kind: ResourceKind, name: str, why: str = OPTIMISTIC_LOCK) -> _Reply:
    return _failure(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {kind.qualified} "{name}": {why}',
        _details(kind, name),
    )


def _bad_request(message: str) -> _Reply:
    return _failure(400, "BadRequest", message)


def _invalid(
    kind: ResourceKind, name: str, causes: Sequence[tuple[str, str, str]], *, by_kind: bool
) -> _Reply:
    """422 Invalid; each cause is (reason, field, message). `by_kind`: a validation error,
    named by the Kind (the store's own checks name the resource instead)."""
    errors = [f"{field}: {message}" for _, field, message in causes]
    text = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
    qualified = f"{kind.kind}.{kind.group}" if by_kind else kind.qualified
    details = _details(kind, name, kind.kind if by_kind else None)
    details["causes"] = [
        {"reason": reason, "message": message, "field": field} for reason, field, message in causes
    ]
    return _failure(422, "Invalid", f'{qualified} "{name}" is invalid: {text}', details)


_UNAUTHORIZED = _failure(401, "Unauthorized", "Unauthorized")
_UNAVAILABLE = _failure(503, "ServiceUnavailable", UNAVAILABLE)
_INTERNAL = _failure(
    500, "InternalError", "Internal error occurred: the stand-in was told to fail", {}
)
_NO_SUCH_PATH = _failure(404, "NotFound", NOT_FOUND_PATH, {})
_NOT_ALLOWED = _failure(405, "MethodNotAllowed", METHOD_NOT_ALLOWED, {})


def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _without_metadata(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in obj.items() if key != "metadata"}


def _param(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


# -- selectors -------------------------------------------------------------------


@dataclass(frozen=True)
class _Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, Any]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        return not present or value not in self.values  # "!=" and "notin"


def _split_selector(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def parse_label_selector(text: str) -> list[_Requirement]:
    """Requirements of a label selector; ValueError if one cannot be parsed."""
    requirements = []
    for part in _split_selector(text):
        if match := _SET.fullmatch(part):
            values = frozenset(v.strip() for v in match["values"].split(",") if v.strip())
            requirements.append(_Requirement(match["key"], match["op"], values))
        elif match := _EQUALITY.fullmatch(part):
            op = "!=" if match["op"] == "!=" else "="
            requirements.append(_Requirement(match["key"], op, frozenset({match["value"]})))
        elif match := _EXISTS.fullmatch(part):
            requirements.append(_Requirement(match["key"], "!" if match["not"] else "exists"))
        else:
            raise ValueError(f"unable to parse requirement: {part!r}")
    return requirements


def parse_field_selector(text: str) -> list[_Requirement]:
    """Requirements on `metadata.name`/`metadata.namespace`; ValueError for anything else."""
    requirements = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        match = _FIELD.fullmatch(part)
        if match is None:
            raise ValueError(f"invalid selector: '{text}'; can't understand '{part}'")
        if match["key"] not in ("metadata.name", "metadata.namespace"):
            raise ValueError(f"field label not supported: {match['key']}")
        op = "!=" if match["op"] == "!=" else "="
        requirements.append(_Requirement(match["key"], op, frozenset({match["value"].strip()})))
    return requirements


# -- events.k8s.io/v1 validation ---------------------------------------------------


def event_problems(
    obj: Mapping[str, Any], current: Mapping[str, Any] | None = None
) -> list[tuple[str, str, str]]:
    """(reason, field, message) of each rule an events.k8s.io/v1 Event breaks: on create
    (`current` None) ValidateEventCreate's, on update ValidateEventUpdate's."""
    problems: list[tuple[str, str, str]] = []

    def required(field: str) -> None:
        problems.append(("FieldValueRequired", field, "Required value"))

    def invalid(field: str, message: str) -> None:
        problems.append(("FieldValueInvalid", field, f'Invalid value: "": {message}'))

    namespace = str((obj.get("metadata") or {}).get("namespace") or "")
    regarding = obj.get("regarding") or {}
    # legacy validation of an Event with an eventTime
    if not regarding.get("namespace") and namespace not in ("default", "kube-system"):
        invalid("involvedObject.namespace", "does not match event.namespace")
    controller = str(obj.get("reportingController") or "")
    if not controller:
        required("reportingController")
    elif not _qualified_name(controller):
        invalid("reportingController", "must be a qualified name")
    for field in ("reportingInstance", "action", "reason"):
        if not obj.get(field):
            required(field)
    for field, limit in EVENT_LIMITS.items():
        if len(str(obj.get(field) or "").encode()) > limit:
            name = EVENT_FIELD_NAMES.get(field, field)
            invalid(name, f"can have at most {limit} characters")
    if current is None or obj.get("series") != current.get("series"):
        series = obj.get("series")
        if series is not None:
            if not isinstance(series, dict) or int(series.get("count") or 0) < 2:
                invalid("series.count", "should be at least 2")
            if not isinstance(series, dict) or not series.get("lastObservedTime"):
                required("series.lastObservedTime")
    if current is None:
        if not obj.get("eventTime"):
            required("eventTime")
        if obj.get("type") not in EVENT_TYPES:
            invalid("type", f"has invalid value: {obj.get('type') or ''}")
        for field in ("deprecatedFirstTimestamp", "deprecatedLastTimestamp", "deprecatedCount"):
            if obj.get(field):
                invalid(EVENT_FIELD_NAMES[field], "needs to be unset")
        if obj.get("deprecatedSource"):
            invalid("source", "needs to be unset")
        return problems
    for field in EVENT_IMMUTABLE:
        if obj.get(field) != current.get(field):
            name = EVENT_FIELD_NAMES.get(field, field)
            problems.append(("FieldValueInvalid", name, "Invalid value: field is immutable"))
    return problems


def _qualified_name(value: str) -> bool:
    """Kubernetes' IsQualifiedName: an optional DNS-subdomain prefix and `/`, then a name of
    at most 63 characters."""
    prefix, slash, name = value.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return len(name) <= 63 and bool(_QUALIFIED_NAME.fullmatch(name))


# -- HTTP ------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server_version = "KubeStandIn"
    sys_version = ""
    # what the stdlib sends for requests it cannot parse or methods nobody handles
    error_content_type = "application/json"
    error_message_format = (
        '{"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",'
        ' "message": "%(message)s", "reason": "", "code": %(code)d}'
    )

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: no access log on stderr."""

    def _dispatch(self) -> None:
        server = cast(StandInServer, self.server)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        reply = server.standin._serve(
            self.command,
            self.path,
            self.headers.get("Authorization") or "",
            self.headers.get("Content-Type") or "",
            raw,
            server.stopping,
        )
        if reply is None:  # stopped while delaying: drop the connection unanswered
            self.close_connection = True
            return
        payload = json.dumps(reply.body).encode()
        self.send_response(reply.status)
        # exactly this: lightkube makes an ApiError only of "application/json" errors
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _dispatch
    do_POST = _dispatch
    do_PUT = _dispatch
    do_PATCH = _dispatch
    do_DELETE = _dispatch


class KubeStandIn(HttpStandIn):
    """An in-memory Kubernetes API server on 127.0.0.1; see the module docstring.

    State (objects, the resourceVersion counter, the request log) survives
    `stop()`/`start()`, which reuse the same port. Faults can be switched at any time:
    `unavailable` (503 for everything) and `delay` (seconds to wait before answering).
    `validator`, if set, checks ListenerContextExamples on every write: each message it
    returns ("spec.username: Required value") becomes a cause of a 422 Invalid.
    """

    name = "kube-standin"
    handler = _Handler

    def __init__(self, port: int = 0, *, validator: Validator | None = None) -> None:
        super().__init__(port)
        self.token = "kube-" + secrets.token_urlsafe(24)
        remember(self.token)
        self.validator = validator
        self.unavailable = False
        self.failing = False
        self.delay = 0.0
        self._open = threading.Event()
        self._open.set()
        self._waiting = 0
        self._lock = threading.RLock()
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._revision = 1
        self._log: list[KubeRequest] = []
        self._patches: list[tuple[str, Any]] = []
        self._kinds = {(k.group, k.version, k.plural): k for k in KINDS}

    # -- clients -------------------------------------------------------------

    def kubeconfig_dict(
        self,
        *,
        token: str | None = None,
        anonymous: bool = False,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> dict[str, Any]:
        """A kubeconfig for this server (plain http): the stand-in's token unless `token`
        is given; `anonymous` writes a user with no credentials at all."""
        user: dict[str, Any] = {} if anonymous else {"token": token or self.token}
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kube-standin", "cluster": {"server": self.url}}],
            "users": [{"name": "kube-standin", "user": user}],
            "contexts": [
                {
                    "name": "kube-standin",
                    "context": {
                        "cluster": "kube-standin",
                        "user": "kube-standin",
                        "namespace": namespace,
                    },
                }
            ],
            "current-context": "kube-standin",
            "preferences": {},
        }

    def kubeconfig(
        self,
        path: Path,
        *,
        token: str | None = None,
        anonymous: bool = False,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> Path:
        """Write `kubeconfig_dict(...)` to `path` (JSON, which is YAML) and return the path."""
        config = self.kubeconfig_dict(token=token, anonymous=anonymous, namespace=namespace)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=2) + "\n")
        path.chmod(0o600)
        return path

    def client(
        self,
        *,
        token: str | None = None,
        anonymous: bool = False,
        namespace: str = DEFAULT_NAMESPACE,
        timeout: float = 5.0,
    ) -> Client:
        """A `lightkube.Client` for this server (environment proxies ignored)."""
        import httpx2  # noqa: PLC0415 (the stand-in itself is stdlib only)
        from lightkube import Client, KubeConfig  # noqa: PLC0415

        config = KubeConfig.from_dict(
            self.kubeconfig_dict(token=token, anonymous=anonymous, namespace=namespace)
        )
        return Client(config=config, timeout=httpx2.Timeout(timeout), trust_env=False)

    # -- test set-up and inspection ------------------------------------------

    def put(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create or replace `obj` (its kind from apiVersion/kind) as the API server would,
        unconditionally unless it carries a resourceVersion; returns the stored object.
        Raises KubeStandInError with the Status the API would send if that is refused."""
        body = copy.deepcopy(dict(obj))
        kind = self._kind_named(str(body.get("kind") or ""))
        meta = body.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ValueError("metadata must be an object")
        namespace = str(meta.setdefault("namespace", DEFAULT_NAMESPACE))
        name = str(meta.get("name") or "")
        with self._lock:
            current = self._objects.get((kind.plural, namespace, name))
            if current is None:
                meta.pop("resourceVersion", None)
                reply = self._create(kind, namespace, body, dry_run=False)
            else:
                meta.setdefault("resourceVersion", current["metadata"]["resourceVersion"])
                reply = self._update(kind, namespace, name, body, patch=False, dry_run=False)
        if reply.status >= 400:
            raise KubeStandInError(reply.body)
        return copy.deepcopy(cast(dict[str, Any], reply.body))

    def put_policy(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """`put` for a ListenerContextExample (apiVersion and kind may be left out)."""
        body = {"apiVersion": POLICY.api_version, "kind": POLICY.kind, **obj}
        return self.put(body)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A copy of the stored object, or None; `kind` is the Kind or the plural."""
        resource = self._kind_named(kind)
        with self._lock:
            obj = self._objects.get((resource.plural, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def items(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Copies of the stored objects of a kind (in one namespace, or all), in list order."""
        resource = self._kind_named(kind)
        with self._lock:
            return [
                copy.deepcopy(obj)
                for (plural, ns, _), obj in sorted(self._objects.items())
                if plural == resource.plural and namespace in (None, ns)
            ]

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete as the API would (the deletion is a write); False if there was nothing."""
        resource = self._kind_named(kind)
        with self._lock:
            if (resource.plural, namespace, name) not in self._objects:
                return False
            self._delete(resource, namespace, name, None, dry_run=False)
            return True

    @property
    def resource_version(self) -> str:
        """The current global resourceVersion (what a list would carry)."""
        with self._lock:
            return str(self._revision)

    @property
    def requests(self) -> list[KubeRequest]:
        """Every request received (method, path, query, content type), oldest first."""
        with self._lock:
            return list(self._log)

    @property
    def patches(self) -> list[tuple[str, Any]]:
        """(path, body) of every authenticated PATCH, oldest first: the body as parsed
        JSON, or its text when it is not JSON."""
        with self._lock:
            return list(self._patches)

    def count(self, method: str | None = None, path_prefix: str = "/") -> int:
        """Requests with this method (any if None) whose path starts with `path_prefix`."""
        with self._lock:
            return sum(
                1
                for request in self._log
                if (method is None or request.method == method.upper())
                and request.path.startswith(path_prefix)
            )

    def hang(self) -> None:
        """Hold every request from now on unanswered, until `release()` (or `stop()`)."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    @property
    def waiting(self) -> int:
        """Requests held by `hang()` right now."""
        with self._lock:
            return self._waiting

    def reset_counts(self) -> None:
        with self._lock:
            self._log.clear()
            self._patches.clear()

    # -- internals -----------------------------------------------------------

    def _kind_named(self, name: str) -> ResourceKind:
        for kind in KINDS:
            if name in (kind.kind, kind.plural):
                return kind
        raise ValueError(f"the Kubernetes stand-in serves no kind {name!r}")

    def _authorized(self, authorization: str) -> bool:
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        return (
            scheme.lower() == "bearer"
            and bool(token)
            and secrets.compare_digest(token.encode(), self.token.encode())
        )

    def _serve(
        self,
        method: str,
        raw_path: str,
        authorization: str,
        content_type: str,
        raw_body: bytes,
        stopping: threading.Event,
    ) -> _Reply | None:
        split = urlsplit(raw_path)
        path = split.path
        with self._lock:
            self._log.append(KubeRequest(method, path, split.query, content_type))
        if not self._open.is_set():
            with self._lock:
                self._waiting += 1
            try:
                while not self._open.wait(0.05):
                    if stopping.is_set():
                        return None
            finally:
                with self._lock:
                    self._waiting -= 1
        delay = self.delay
        if delay > 0 and stopping.wait(delay):
            return None
        if self.unavailable:
            return _UNAVAILABLE
        if self.failing:
            return _INTERNAL
        if not self._authorized(authorization):
            return _UNAUTHORIZED
        query = parse_qs(split.query, keep_blank_values=True)
        body: Any = None
        if raw_body.strip():
            try:
                body = json.loads(raw_body)
            except ValueError as exc:
                if method == "PATCH":
                    with self._lock:
                        self._patches.append((path, raw_body.decode(errors="replace")))
                return _bad_request(f"error decoding request body: {exc}")
        if method == "PATCH":
            with self._lock:
                self._patches.append((path, copy.deepcopy(body)))
        with self._lock:
            return self._route(method, path, query, content_type, body)

    def _route(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        content_type: str,
        body: Any,
    ) -> _Reply:
        match = _PATH.fullmatch(path)
        if match is None:
            return _NO_SUCH_PATH
        kind = self._kinds.get((match["group"], match["version"], match["plural"]))
        if kind is None or match["sub"] is not None:
            return _NO_SUCH_PATH
        namespace = unquote(match["namespace"]) if match["namespace"] else None
        name = unquote(match["name"]) if match["name"] else None
        dry_run = "All" in query.get("dryRun", [])
        if namespace is None:
            if name is not None:
                return _NO_SUCH_PATH
            return self._list(kind, None, query) if method == "GET" else _NOT_ALLOWED
        if name is None:
            if method == "GET":
                return self._list(kind, namespace, query)
            if method == "POST":
                if not isinstance(body, dict):
                    return _bad_request("the body of the request must be a JSON object")
                return self._create(kind, namespace, body, dry_run=dry_run)
            return _NOT_ALLOWED
        if method == "GET":
            obj = self._objects.get((kind.plural, namespace, name))
            return _not_found(kind, name) if obj is None else _Reply(200, obj)
        if method == "PUT":
            if not isinstance(body, dict):
                return _bad_request("the body of the request must be a JSON object")
            return self._update(kind, namespace, name, body, patch=False, dry_run=dry_run)
        if method == "PATCH":
            return self._patch(kind, namespace, name, content_type, body, dry_run=dry_run)
        if method == "DELETE":
            return self._delete(kind, namespace, name, body, dry_run=dry_run)
        return _NOT_ALLOWED

    def _next_revision(self) -> str:
        self._revision += 1
        return str(self._revision)

    @staticmethod
    def _check_type(kind: ResourceKind, obj: dict[str, Any]) -> _Reply | None:
        api_version = obj.setdefault("apiVersion", kind.api_version)
        if api_version != kind.api_version:
            return _bad_request(
                f"the API version in the data ({api_version}) does not match the expected"
                f" API version ({kind.api_version})"
            )
        found = obj.setdefault("kind", kind.kind)
        if found != kind.kind:
            return _bad_request(
                f"the kind in the data ({found}) does not match the expected kind ({kind.kind})"
            )
        if not isinstance(obj.setdefault("metadata", {}), dict):
            return _bad_request("metadata must be an object")
        return None

    def _validate(
        self,
        kind: ResourceKind,
        name: str,
        obj: dict[str, Any],
        current: dict[str, Any] | None = None,
    ) -> _Reply | None:
        if len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
            return _invalid(
                kind,
                name,
                [
                    (
                        "FieldValueInvalid",
                        "metadata.name",
                        f'Invalid value: "{name}": {_DNS_SUBDOMAIN_MESSAGE}',
                    )
                ],
                by_kind=True,
            )
        if kind.custom and self.validator is not None:
            errors = list(self.validator(copy.deepcopy(obj)))
            if errors:
                causes = []
                for error in errors:
                    field, _, message = error.partition(": ")
                    causes.append(("FieldValueInvalid", field, message or field))
                return _invalid(kind, name, causes, by_kind=True)
        if kind is EVENT:
            problems = event_problems(obj, current)
            if problems:
                return _invalid(kind, name, problems, by_kind=True)
        return None

    def _store(self, kind: ResourceKind, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        if kind.custom:
            spec = obj.get("spec")
            if isinstance(spec, dict):
                remember(spec.get("password"))
        self._objects[(kind.plural, meta["namespace"], meta["name"])] = obj

    def _create(
        self, kind: ResourceKind, namespace: str, obj: dict[str, Any], *, dry_run: bool
    ) -> _Reply:
        obj = copy.deepcopy(obj)
        refused = self._check_type(kind, obj)
        if refused is not None:
            return refused
        meta = obj["metadata"]
        if meta.get("namespace") not in (None, "", namespace):
            return _bad_request(
                "the namespace of the provided object does not match the namespace sent on"
                " the request"
            )
        meta["namespace"] = namespace
        name = str(meta.get("name") or "")
        if not name and meta.get("generateName"):
            suffix = "".join(secrets.choice(_GENERATED_ALPHABET) for _ in range(5))
            name = meta["name"] = f"{meta['generateName']}{suffix}"
        if not name:
            return _invalid(
                kind,
                "",
                [
                    (
                        "FieldValueRequired",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    )
                ],
                by_kind=True,
            )
        refused = self._validate(kind, name, obj)
        if refused is not None:
            return refused
        if meta.get("resourceVersion"):
            return _failure(500, "", "resourceVersion should not be set on objects to be created")
        if (kind.plural, namespace, name) in self._objects:
            return _failure(
                409,
                "AlreadyExists",
                f'{kind.qualified} "{name}" already exists',
                _details(kind, name),
            )
        for server_set in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(server_set, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _timestamp()
        if kind.custom:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        if dry_run:
            meta.pop("resourceVersion", None)
            return _Reply(201, obj)
        meta["resourceVersion"] = self._next_revision()
        self._store(kind, obj)
        return _Reply(201, copy.deepcopy(obj))

    def _update(
        self,
        kind: ResourceKind,
        namespace: str,
        name: str,
        obj: dict[str, Any],
        *,
        patch: bool,
        dry_run: bool,
    ) -> _Reply:
        obj = copy.deepcopy(obj)
        refused = self._check_type(kind, obj)
        if refused is not None:
            return refused
        meta = obj["metadata"]
        if meta.get("name") not in (None, "", name):
            return _bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL"
                f" ({name})"
            )
        if meta.get("namespace") not in (None, "", namespace):
            return _bad_request(
                "the namespace of the provided object does not match the namespace sent on"
                " the request"
            )
        meta["name"], meta["namespace"] = name, namespace
        current = self._objects.get((kind.plural, namespace, name))
        if current is None:
            if patch or kind.custom:
                return _not_found(kind, name)
            meta.pop("resourceVersion", None)  # a Lease PUT to a new name creates it
            return self._create(kind, namespace, obj, dry_run=dry_run)
        old = current["metadata"]
        version = meta.get("resourceVersion")
        if not version:
            if not patch:
                return _invalid(
                    kind,
                    name,
                    [
                        (
                            "FieldValueInvalid",
                            "metadata.resourceVersion",
                            "Invalid value: 0x0: must be specified for an update",
                        )
                    ],
                    by_kind=False,
                )
        elif version != old["resourceVersion"]:
            return _conflict(kind, name)
        meta["resourceVersion"] = old["resourceVersion"]
        if meta.get("uid") and meta["uid"] != old["uid"]:
            return _invalid(
                kind,
                name,
                [
                    (
                        "FieldValueInvalid",
                        "metadata.uid",
                        f'Invalid value: "{meta["uid"]}": field is immutable',
                    )
                ],
                by_kind=True,
            )
        meta["uid"] = old["uid"]
        meta["creationTimestamp"] = old["creationTimestamp"]
        for server_set in ("generation", "deletionTimestamp", "deletionGracePeriodSeconds"):
            if server_set in old:
                meta[server_set] = old[server_set]
            else:
                meta.pop(server_set, None)
        refused = self._validate(kind, name, obj, current)
        if refused is not None:
            return refused
        if kind.custom and _without_metadata(obj) != _without_metadata(current):
            meta["generation"] = int(old.get("generation") or 0) + 1
        if obj == current:  # nothing changed: not written, resourceVersion kept
            return _Reply(200, copy.deepcopy(current))
        if dry_run:
            return _Reply(200, obj)
        meta["resourceVersion"] = self._next_revision()
        self._store(kind, obj)
        return _Reply(200, copy.deepcopy(obj))

    def _patch(
        self,
        kind: ResourceKind,
        namespace: str,
        name: str,
        content_type: str,
        patch: Any,
        *,
        dry_run: bool,
    ) -> _Reply:
        media_type = content_type.partition(";")[0].strip().lower()
        accepted = [MERGE_PATCH] if kind.custom else [MERGE_PATCH, STRATEGIC_MERGE_PATCH]
        if media_type not in accepted:
            return _failure(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types"
                f" include: {', '.join(accepted)}",
                {},
            )
        if not isinstance(patch, dict):
            return _bad_request("the body of a merge patch must be a JSON object")
        current = self._objects.get((kind.plural, namespace, name))
        if current is None:
            return _not_found(kind, name)
        patched = merge_patch(current, patch)
        return self._update(kind, namespace, name, patched, patch=True, dry_run=dry_run)

    def _delete(
        self, kind: ResourceKind, namespace: str, name: str, options: Any, *, dry_run: bool
    ) -> _Reply:
        key = (kind.plural, namespace, name)
        current = self._objects.get(key)
        if current is None:
            return _not_found(kind, name)
        meta = current["metadata"]
        preconditions = options.get("preconditions") if isinstance(options, dict) else None
        if isinstance(preconditions, dict):
            for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
                wanted = preconditions.get(field)
                if wanted and wanted != meta[field]:
                    return _conflict(
                        kind,
                        name,
                        f"Precondition failed: {label} in precondition: {wanted},"
                        f" {label} in object meta: {meta[field]}",
                    )
        if not dry_run:
            del self._objects[key]
            self._next_revision()
        details = {**_details(kind, name), "uid": meta["uid"]}
        return _Reply(
            200,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": details,
            },
        )

    def _list(
        self, kind: ResourceKind, namespace: str | None, query: dict[str, list[str]]
    ) -> _Reply:
        if (_param(query, "watch") or "").lower() in ("true", "1"):
            return _failure(
                405, "MethodNotAllowed", "watch is not implemented by the Kubernetes stand-in", {}
            )
        try:
            labels = parse_label_selector(_param(query, "labelSelector") or "")
            fields = parse_field_selector(_param(query, "fieldSelector") or "")
        except ValueError as exc:
            return _bad_request(str(exc))
        limit_text = _param(query, "limit") or "0"
        if not limit_text.isdigit():
            return _bad_request(f"invalid limit: {limit_text!r}")
        limit = int(limit_text)
        start: tuple[str, str] | None = None
        token = _param(query, "continue")
        if token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
                start = (str(decoded[0]), str(decoded[1]))
            except (ValueError, TypeError, IndexError, binascii.Error):
                return _bad_request("continue key is not valid: incorrect encoded start key")
        matching = []
        for (plural, ns, name), obj in sorted(self._objects.items()):
            if plural != kind.plural or namespace not in (None, ns):
                continue
            if start is not None and (ns, name) < start:
                continue
            meta = obj["metadata"]
            object_labels = meta.get("labels") or {}
            object_fields = {"metadata.name": name, "metadata.namespace": ns}
            if all(r.matches(object_labels) for r in labels) and all(
                r.matches(object_fields) for r in fields
            ):
                matching.append(obj)
        list_meta: dict[str, Any] = {"resourceVersion": str(self._revision)}
        if limit and len(matching) > limit:
            following = matching[limit]["metadata"]
            next_key = [following["namespace"], following["name"]]
            list_meta["continue"] = base64.urlsafe_b64encode(json.dumps(next_key).encode()).decode()
            matching = matching[:limit]
        items = [copy.deepcopy(obj) for obj in matching]
        if not kind.custom:  # built-in lists leave kind and apiVersion out of their items
            for item in items:
                item.pop("kind", None)
                item.pop("apiVersion", None)
        return _Reply(
            200,
            {
                "kind": f"{kind.kind}List",
                "apiVersion": kind.api_version,
                "metadata": list_meta,
                "items": items,
            },
        )


__all__ = [
    "EVENT",
    "KINDS",
    "LEASE",
    "MERGE_PATCH",
    "POLICY",
    "STRATEGIC_MERGE_PATCH",
    "KubeRequest",
    "KubeStandIn",
    "KubeStandInError",
    "ResourceKind",
    "event_problems",
    "merge_patch",
    "parse_field_selector",
    "parse_label_selector",
]
