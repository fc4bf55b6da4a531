"""A stand-in for HashiCorp Vault's HTTP API, for tests.

Written because no Vault server binary can be installed on this machine: tests
need something that answers the way Vault does, driven by the real `hvac`
client. It is an in-memory `http.server` (stdlib only), not a Vault.

It follows these parts of Vault's documented HTTP API (developer.hashicorp.com
/vault/api-docs, and the plugin sources where the docs are silent):

- Overview: routes under `/v1/`; the `X-Vault-Token` header (or
  `Authorization: Bearer`); the `X-Vault-Namespace` header (absent = root,
  `ns1/` is the same as `ns1`); errors as `{"errors": [...]}` with 400, 403,
  404, 405, 429 and 503; successful reads in the usual envelope (`request_id`,
  `lease_id`, `renewable`, `lease_duration`, `data`, `wrap_info`, `warnings`,
  `auth`, `mount_type`); writes without data answer 204.
- KV v2 (`<mount>/data/:path[?version=N]` GET/POST/PUT/DELETE, `options.cas`,
  `<mount>/metadata/:path` GET/DELETE, `<mount>/delete|undelete|destroy/:path`).
  A missing secret or version is 404 `{"errors": []}`; a deleted or destroyed
  version is 404 with the whole envelope (`data.data` null, `data.metadata`
  with `deletion_time`/`destroyed`) and no `errors` key, as the kv plugin does.
- KV v1 (`<mount>/:path` GET/POST/PUT/DELETE); `lease_duration` is 2764800
  (32 days) unless the secret has a `ttl` (or `lease`) field.
- Token auth: `auth/token/lookup-self` (GET) and `auth/token/renew-self`
  (POST/PUT, optional `increment`); renewing a non-renewable token is 400
  `lease is not renewable`, a token without TTL 400 `invalid lease ID`.
- Kubernetes auth login (`auth/<mount>/login`, `role` + `jwt`): an unknown
  role is 400 `invalid role name "x"`; a JWT that is not the role's is 403
  `permission denied` (what a failed TokenReview gives).
- AppRole login (`auth/<mount>/login`, `role_id` + `secret_id`): a wrong role
  ID or secret ID is 400 `invalid role or secret ID`.
- Faults: sealed is 503 `Vault is sealed` for everything except
  `sys/health` (503 with its body) and `sys/seal-status` (200); the rate limit
  is 429 `request path "<path>": rate limit quota exceeded`; a missing,
  unknown or expired token is 403 `permission denied`; a token whose policies
  do not cover the path is 403 `1 error occurred: * permission denied` (the
  multierror text Vault sends for an ACL refusal).

Simplifications, on purpose: a token's "policies" are path prefixes (a
trailing `*` is ignored, `root` allows everything) and grant every operation;
tokens, auth roles and secrets live in exactly one namespace (a parent
namespace's token is not accepted in a child); the namespace cannot be given
as a path prefix; a path nobody serves is 403 without a valid token (or
policy) and 404 `{"errors": []}` with one, as Vault checks the token first;
LIST, PATCH and max-versions pruning are not implemented. Responses are
HTTP/1.0 (one request a connection), so `stop()` really refuses the next one.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import string
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from server.demo.story import seed_policy
from tests.support.secrets import remember
from tests.support.standin import HttpStandIn, StandInServer

KV_V1_DEFAULT_LEASE = 2764800  # Vault's default lease TTL: 768h
DEFAULT_LOGIN_TTL = 2764800.0
# The token the suite's `vault` fixture (tests/conftest.py) makes valid, with every policy.
ROOT_TOKEN = "hvs.test-root-token"
PERMISSION_DENIED = "permission denied"
ACL_DENIED = "1 error occurred:\n\t* permission denied\n\n"
SEALED = "Vault is sealed"

_ALPHABET = string.ascii_letters + string.digits
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h|d))+")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}


def _random_id(prefix: str = "", length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def _rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _namespace(value: str | None) -> str:
    return (value or "").strip().strip("/")


def parse_duration(value: object) -> float | None:
    """Seconds from a Vault duration: a number of seconds, or Go's "1h30m" form."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    if not _DURATION.fullmatch(text):
        return None
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))


@dataclass
class _Token:
    token: str
    namespace: str
    policies: tuple[str, ...]
    ttl: float | None
    renewable: bool
    path: str
    display_name: str
    meta: dict[str, str] | None
    issued_at: float = field(default_factory=time.time)
    expires_at: float | None = None
    accessor: str = field(default_factory=_random_id)
    renewals: int = 0

    def __post_init__(self) -> None:
        if self.ttl is not None:
            self.expires_at = self.issued_at + self.ttl

    def valid(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at

    def allows(self, api_path: str) -> bool:
        for policy in self.policies:
            if policy == "root" or api_path.startswith(policy.rstrip("*")):
                return True
        return False

    def auth_block(self, lease_duration: int) -> dict[str, Any]:
        return {
            "client_token": self.token,
            "accessor": self.accessor,
            "policies": list(self.policies),
            "token_policies": list(self.policies),
            "metadata": self.meta,
            "lease_duration": lease_duration,
            "renewable": self.renewable and self.ttl is not None,
            "entity_id": "",
            "token_type": "service",
            "orphan": True,
            "mfa_requirement": None,
            "num_uses": 0,
        }


@dataclass
class _Version:
    data: dict[str, Any]
    created: float = field(default_factory=time.time)
    deleted: float | None = None
    destroyed: bool = False

    def metadata(self) -> dict[str, Any]:
        return {
            "created_time": _rfc3339(self.created),
            "deletion_time": "" if self.deleted is None else _rfc3339(self.deleted),
            "destroyed": self.destroyed,
        }


@dataclass
class _V2Secret:
    versions: dict[int, _Version] = field(default_factory=dict)
    custom_metadata: dict[str, str] | None = None

    @property
    def current(self) -> int:
        return max(self.versions, default=0)

    def version_metadata(self, number: int) -> dict[str, Any]:
        return {
            **self.versions[number].metadata(),
            "custom_metadata": self.custom_metadata,
            "version": number,
        }


@dataclass(frozen=True)
class _KubernetesRole:
    jwt: str
    policies: tuple[str, ...]
    ttl: float


@dataclass(frozen=True)
class _AppRole:
    secret_id: str
    policies: tuple[str, ...]
    ttl: float


@dataclass(frozen=True)
class _Reply:
    status: int
    body: Any = None  # None: no body (204)


def _errors(status: int, *messages: str) -> _Reply:
    return _Reply(status, {"errors": list(messages)})


def _envelope(
    data: Any = None,
    *,
    auth: Any = None,
    lease_duration: int = 0,
    mount_type: str = "",
) -> dict[str, Any]:
    return {
        "request_id": str(uuid.uuid4()),
        "lease_id": "",
        "renewable": False,
        "lease_duration": lease_duration,
        "data": data,
        "wrap_info": None,
        "warnings": None,
        "auth": auth,
        "mount_type": mount_type,
    }


@dataclass(frozen=True)
class RawJson:
    """A value sent exactly as this JSON text: what Python's json module would refuse to
    write (nesting deeper than its recursion limit), as a Vault that stored it sends it."""

    text: str


def encode_json(body: Any) -> bytes:
    """The body as JSON, RawJson values written as their own text."""
    raws: list[str] = []

    def placeholder(value: Any) -> str:
        if not isinstance(value, RawJson):
            raise TypeError(f"{type(value).__name__} is not JSON")
        raws.append(value.text)
        return f"\x00raw-json-{len(raws) - 1}\x00"

    text = json.dumps(body, default=placeholder)
    for number, raw in enumerate(raws):
        text = text.replace(json.dumps(f"\x00raw-json-{number}\x00"), raw)
    return text.encode()


NOT_FOUND = _Reply(404, {"errors": []})
NO_CONTENT = _Reply(204)
UNSUPPORTED = _errors(405, "unsupported operation")
_WRITE = frozenset({"POST", "PUT"})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server_version = "VaultStandIn"
    sys_version = ""
    # what the stdlib sends for requests it cannot parse or methods nobody handles
    error_content_type = "application/json"
    error_message_format = '{"errors": ["%(message)s"]}'

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: no access log on stderr."""

    def _dispatch(self) -> None:
        server = cast(StandInServer, self.server)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        token = self.headers.get("X-Vault-Token") or ""
        authorization = self.headers.get("Authorization") or ""
        if not token and authorization.lower().startswith("bearer "):
            token = authorization[len("bearer ") :].strip()
        reply = server.standin._serve(
            self.command,
            self.path,
            token,
            _namespace(self.headers.get("X-Vault-Namespace")),
            raw,
            server.stopping,
        )
        if reply is None:  # stopped while delaying: drop the connection unanswered
            self.close_connection = True
            return
        payload = b"" if reply.body is None else encode_json(reply.body)
        self.send_response(reply.status)
        if reply.body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    do_GET = _dispatch
    do_POST = _dispatch
    do_PUT = _dispatch
    do_DELETE = _dispatch
    do_PATCH = _dispatch
    do_LIST = _dispatch


class VaultStandIn(HttpStandIn):
    """An in-memory Vault HTTP API on 127.0.0.1; see the module docstring.

    State (secrets, tokens, roles, the request log) survives `stop()`/`start()`,
    which reuse the same port. Faults can be switched at any time:
    `sealed`, `rate_limited` and `delay` (seconds to wait before answering).
    """

    name = "vault-standin"
    handler = _Handler

    def __init__(
        self,
        port: int = 0,
        *,
        kv_v2_mounts: Sequence[str] = ("secret",),
        kv_v1_mounts: Sequence[str] = ("kv",),
    ) -> None:
        super().__init__(port)
        overlap = set(kv_v2_mounts) & set(kv_v1_mounts)
        if overlap:
            raise ValueError(f"mounted both as KV v1 and v2: {sorted(overlap)}")
        self.kv_v2_mounts = frozenset(m.strip("/") for m in kv_v2_mounts)
        self.kv_v1_mounts = frozenset(m.strip("/") for m in kv_v1_mounts)
        self.sealed = False
        self.rate_limited = False
        self.delay = 0.0
        self._lock = threading.RLock()
        self._tokens: dict[tuple[str, str], _Token] = {}
        self._auth_mounts: dict[tuple[str, str], str] = {}
        self._kubernetes: dict[tuple[str, str, str], _KubernetesRole] = {}
        self._approles: dict[tuple[str, str, str], _AppRole] = {}
        self._v2: dict[tuple[str, str, str], _V2Secret] = {}
        self._v1: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._log: list[tuple[str, str, str]] = []

    # -- test set-up ---------------------------------------------------------

    def add_token(
        self,
        token: str,
        namespace: str = "",
        policies: Sequence[str] = ("root",),
        ttl: float | None = None,
        renewable: bool = True,
    ) -> None:
        """A token valid in `namespace`; `policies` are the path prefixes it may use."""
        self._store_token(
            _Token(
                token=token,
                namespace=_namespace(namespace),
                policies=tuple(policies),
                ttl=ttl,
                renewable=renewable,
                path="auth/token/create",
                display_name="token",
                meta=None,
            )
        )

    def revoke_token(self, token: str, namespace: str = "") -> None:
        with self._lock:
            self._tokens.pop((_namespace(namespace), token), None)

    def renewals(self, token: str, namespace: str = "") -> int:
        with self._lock:
            entry = self._tokens.get((_namespace(namespace), token))
            return 0 if entry is None else entry.renewals

    def tokens(self, namespace: str = "") -> list[str]:
        """The tokens known in `namespace`, added or issued by a login."""
        ns = _namespace(namespace)
        with self._lock:
            return [token for (space, token) in self._tokens if space == ns]

    def add_kubernetes_role(
        self,
        role: str,
        jwt: str,
        namespace: str = "",
        mount: str = "kubernetes",
        token_policies: Sequence[str] = ("root",),
        ttl: float = DEFAULT_LOGIN_TTL,
    ) -> None:
        remember(jwt)
        ns, mount = _namespace(namespace), mount.strip("/")
        with self._lock:
            self._claim_auth_mount(ns, mount, "kubernetes")
            self._kubernetes[(ns, mount, role)] = _KubernetesRole(jwt, tuple(token_policies), ttl)

    def add_approle(
        self,
        role_id: str,
        secret_id: str,
        namespace: str = "",
        mount: str = "approle",
        token_policies: Sequence[str] = ("root",),
        ttl: float = DEFAULT_LOGIN_TTL,
    ) -> None:
        remember(secret_id)
        ns, mount = _namespace(namespace), mount.strip("/")
        with self._lock:
            self._claim_auth_mount(ns, mount, "approle")
            self._approles[(ns, mount, role_id)] = _AppRole(secret_id, tuple(token_policies), ttl)

    def put_v2(
        self,
        path: str,
        data: Mapping[str, Any],
        namespace: str = "",
        mount: str = "secret",
        *,
        secret: bool = True,
    ) -> int:
        """Write a new version, as `POST <mount>/data/<path>` would; returns its number.

        Its string values are passwords the suite's log check looks for, unless `secret` is
        false (generated values, which may also be user names or words of a message).
        """
        if secret:
            remember(*data.values())
        key = self._v2_key(namespace, mount, path)
        with self._lock:
            secret = self._v2.setdefault(key, _V2Secret())
            number = secret.current + 1
            secret.versions[number] = _Version(copy.deepcopy(dict(data)))
            return number

    def delete_v2(
        self,
        path: str,
        namespace: str = "",
        mount: str = "secret",
        versions: Sequence[int] | None = None,
    ) -> None:
        """Soft-delete the latest version (or the given ones), as Vault's DELETE does."""
        key = self._v2_key(namespace, mount, path)
        with self._lock:
            secret = self._v2.get(key)
            if secret is None:
                return
            self._soft_delete(secret, [secret.current] if versions is None else versions)

    def destroy_v2(
        self,
        path: str,
        versions: Sequence[int],
        namespace: str = "",
        mount: str = "secret",
    ) -> None:
        key = self._v2_key(namespace, mount, path)
        with self._lock:
            secret = self._v2.get(key)
            for number in versions:
                if secret is not None and number in secret.versions:
                    secret.versions[number].destroyed = True

    def put_v1(
        self,
        path: str,
        data: Mapping[str, Any],
        namespace: str = "",
        mount: str = "kv",
    ) -> None:
        remember(*data.values())
        mount = mount.strip("/")
        if mount not in self.kv_v1_mounts:
            raise ValueError(f"{mount!r} is not a KV v1 mount: {sorted(self.kv_v1_mounts)}")
        with self._lock:
            self._v1[(_namespace(namespace), mount, path.strip("/"))] = copy.deepcopy(dict(data))

    # -- observability -------------------------------------------------------

    @property
    def requests(self) -> list[tuple[str, str, str]]:
        """(method, path without query, namespace) of every request, oldest first."""
        with self._lock:
            return list(self._log)

    def count(self, path_prefix: str = "/v1/", namespace: str | None = None) -> int:
        """Requests whose path starts with `path_prefix` ("secret/x" means "/v1/secret/x")."""
        if not path_prefix.startswith("/"):
            path_prefix = "/v1/" + path_prefix
        ns = None if namespace is None else _namespace(namespace)
        with self._lock:
            return sum(
                1
                for _, path, space in self._log
                if path.startswith(path_prefix) and (ns is None or space == ns)
            )

    def reset_counts(self) -> None:
        with self._lock:
            self._log.clear()

    # -- internals -----------------------------------------------------------

    def _claim_auth_mount(self, ns: str, mount: str, kind: str) -> None:
        existing = self._auth_mounts.setdefault((ns, mount), kind)
        if existing != kind:
            raise ValueError(f"auth mount {mount!r} in namespace {ns!r} is {existing}")

    def _v2_key(self, namespace: str, mount: str, path: str) -> tuple[str, str, str]:
        mount = mount.strip("/")
        if mount not in self.kv_v2_mounts:
            raise ValueError(f"{mount!r} is not a KV v2 mount: {sorted(self.kv_v2_mounts)}")
        return (_namespace(namespace), mount, path.strip("/"))

    def _store_token(self, entry: _Token) -> None:
        remember(entry.token)
        with self._lock:
            self._tokens[(entry.namespace, entry.token)] = entry

    @staticmethod
    def _soft_delete(secret: _V2Secret, versions: Sequence[int]) -> None:
        now = time.time()
        for number in versions:
            version = secret.versions.get(number)
            if version is not None and not version.destroyed and version.deleted is None:
                version.deleted = now

    def _serve(
        self,
        method: str,
        raw_path: str,
        token: str,
        ns: str,
        raw_body: bytes,
        stopping: threading.Event,
    ) -> _Reply | None:
        split = urlsplit(raw_path)
        with self._lock:
            self._log.append((method, split.path, ns))
        delay = self.delay
        if delay > 0 and stopping.wait(delay):
            return None
        if not split.path.startswith("/v1/"):
            return NOT_FOUND
        api = split.path[len("/v1/") :].strip("/")
        query = parse_qs(split.query)
        if api in ("sys/health", "sys/seal-status"):
            return self._sys(method, api)
        if self.sealed:
            return _errors(503, SEALED)
        if self.rate_limited:
            return _errors(429, f'request path "{api}": rate limit quota exceeded')
        try:
            body = json.loads(raw_body) if raw_body.strip() else {}
        except ValueError as exc:
            return _errors(400, f"failed to parse JSON input: {exc}")
        if not isinstance(body, dict):
            return _errors(400, "failed to parse JSON input: not a JSON object")
        with self._lock:
            return self._route(method, api, query, token, ns, body)

    def _sys(self, method: str, api: str) -> _Reply:
        if method != "GET":
            return UNSUPPORTED
        if api == "sys/seal-status":
            return _Reply(
                200,
                {
                    "type": "shamir",
                    "initialized": True,
                    "sealed": self.sealed,
                    "t": 1,
                    "n": 1,
                    "progress": 0,
                    "nonce": "",
                    "version": "1.17.0+standin",
                    "migration": False,
                    "recovery_seal": False,
                    "storage_type": "inmem",
                },
            )
        health = {
            "initialized": True,
            "sealed": self.sealed,
            "standby": False,
            "performance_standby": False,
            "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled",
            "server_time_utc": int(time.time()),
            "version": "1.17.0+standin",
        }
        return _Reply(503 if self.sealed else 200, health)

    def _route(
        self,
        method: str,
        api: str,
        query: dict[str, list[str]],
        token: str,
        ns: str,
        body: dict[str, Any],
    ) -> _Reply:
        login = re.fullmatch(r"auth/([^/]+)/login", api)
        if login is not None and (ns, login.group(1)) in self._auth_mounts:
            if method not in _WRITE:
                return UNSUPPORTED
            return self._login(ns, login.group(1), body)

        entry = self._tokens.get((ns, token)) if token else None
        if entry is None or not entry.valid(time.time()):
            return _errors(403, PERMISSION_DENIED)
        if api == "auth/token/lookup-self":
            return self._lookup_self(entry) if method == "GET" else UNSUPPORTED
        if api == "auth/token/renew-self":
            return self._renew_self(entry, body) if method in _WRITE else UNSUPPORTED
        if not entry.allows(api):
            return _errors(403, ACL_DENIED)

        mount, _, rest = api.partition("/")
        if mount in self.kv_v2_mounts:
            return self._kv2(method, ns, mount, rest, query, body)
        if mount in self.kv_v1_mounts:
            return self._kv1(method, ns, mount, rest, body)
        return NOT_FOUND

    # auth ---------------------------------------------------------------------

    def _issue(
        self, ns: str, mount: str, role: str, policies: tuple[str, ...], ttl: float
    ) -> _Reply:
        entry = _Token(
            token=_random_id("hvs."),
            namespace=ns,
            policies=policies,
            ttl=ttl,
            renewable=True,
            path=f"auth/{mount}/login",
            display_name=f"{mount}-{role}",
            meta={"role": role},
        )
        self._store_token(entry)
        kind = self._auth_mounts[(ns, mount)]
        return _Reply(200, _envelope(auth=entry.auth_block(int(ttl)), mount_type=kind))

    def _login(self, ns: str, mount: str, body: dict[str, Any]) -> _Reply:
        if self._auth_mounts[(ns, mount)] == "kubernetes":
            role_name, jwt = str(body.get("role") or ""), str(body.get("jwt") or "")
            if not role_name:
                return _errors(400, "missing role")
            if not jwt:
                return _errors(400, "missing jwt")
            role = self._kubernetes.get((ns, mount, role_name))
            if role is None:
                return _errors(400, f'invalid role name "{role_name}"')
            if not secrets.compare_digest(jwt, role.jwt):
                return _errors(403, PERMISSION_DENIED)
            return self._issue(ns, mount, role_name, role.policies, role.ttl)

        role_id = str(body.get("role_id") or "").strip()
        secret_id = str(body.get("secret_id") or "").strip()
        if not role_id:
            return _errors(400, "missing role_id")
        approle = self._approles.get((ns, mount, role_id))
        if approle is None:
            return _errors(400, "invalid role or secret ID")
        if not secret_id:
            return _errors(400, "missing secret_id")
        if not secrets.compare_digest(secret_id, approle.secret_id):
            return _errors(400, "invalid role or secret ID")
        return self._issue(ns, mount, role_id, approle.policies, approle.ttl)

    @staticmethod
    def _lookup_self(entry: _Token) -> _Reply:
        now = time.time()
        remaining = 0 if entry.expires_at is None else max(0, int(entry.expires_at - now))
        data = {
            "accessor": entry.accessor,
            "creation_time": int(entry.issued_at),
            "creation_ttl": int(entry.ttl or 0),
            "display_name": entry.display_name,
            "entity_id": "",
            "expire_time": None if entry.expires_at is None else _rfc3339(entry.expires_at),
            "explicit_max_ttl": 0,
            "id": entry.token,
            "issue_time": _rfc3339(entry.issued_at),
            "meta": entry.meta,
            "num_uses": 0,
            "orphan": True,
            "path": entry.path,
            "policies": list(entry.policies),
            "renewable": entry.renewable and entry.ttl is not None,
            "ttl": remaining,
            "type": "service",
        }
        return _Reply(200, _envelope(data, mount_type="token"))

    @staticmethod
    def _renew_self(entry: _Token, body: dict[str, Any]) -> _Reply:
        if entry.ttl is None:
            return _errors(400, "invalid lease ID")
        if not entry.renewable:
            return _errors(400, "lease is not renewable")
        increment: float | None = None
        if body.get("increment") not in (None, ""):
            increment = parse_duration(body["increment"])
            if increment is None:
                return _errors(400, f"invalid increment {body['increment']!r}")
        ttl = increment if increment else entry.ttl
        entry.expires_at = time.time() + ttl
        entry.renewals += 1
        return _Reply(200, _envelope(auth=entry.auth_block(int(ttl)), mount_type="token"))

    # KV -----------------------------------------------------------------------

    def _kv2(
        self,
        method: str,
        ns: str,
        mount: str,
        rest: str,
        query: dict[str, list[str]],
        body: dict[str, Any],
    ) -> _Reply:
        area, _, path = rest.partition("/")
        if not path:
            return NOT_FOUND
        key = (ns, mount, path)
        secret = self._v2.get(key)
        if area == "data":
            if method == "GET":
                return self._kv2_read(secret, query)
            if method in _WRITE:
                return self._kv2_write(key, secret, body)
            if method == "DELETE":
                if secret is not None:
                    self._soft_delete(secret, [secret.current])
                return NO_CONTENT
            return UNSUPPORTED
        if area == "metadata":
            if method == "GET":
                return self._kv2_metadata(secret)
            if method == "DELETE":
                self._v2.pop(key, None)
                return NO_CONTENT
            return UNSUPPORTED
        if area in ("delete", "undelete", "destroy"):
            if method not in _WRITE:
                return UNSUPPORTED
            versions = body.get("versions")
            if not isinstance(versions, list) or not versions:
                return _errors(400, "no version number provided")
            if secret is not None:
                numbers = [int(v) for v in versions]
                for number in numbers:
                    version = secret.versions.get(number)
                    if version is None:
                        continue
                    if area == "undelete" and not version.destroyed:
                        version.deleted = None
                    elif area == "destroy":
                        version.destroyed = True
                if area == "delete":
                    self._soft_delete(secret, numbers)
            return NO_CONTENT
        return NOT_FOUND

    @staticmethod
    def _kv2_read(secret: _V2Secret | None, query: dict[str, list[str]]) -> _Reply:
        if secret is None:
            return NOT_FOUND
        raw = (query.get("version") or ["0"])[-1]
        try:
            number = int(raw or "0")
        except ValueError:
            return _errors(400, f'error converting input "{raw}" for field "version"')
        number = number if number > 0 else secret.current
        version = secret.versions.get(number)
        if version is None:
            return NOT_FOUND
        metadata = secret.version_metadata(number)
        if version.deleted is not None or version.destroyed:
            return _Reply(404, _envelope({"data": None, "metadata": metadata}, mount_type="kv"))
        return _Reply(200, _envelope({"data": version.data, "metadata": metadata}, mount_type="kv"))

    def _kv2_write(
        self, key: tuple[str, str, str], secret: _V2Secret | None, body: dict[str, Any]
    ) -> _Reply:
        data = body.get("data")
        if not isinstance(data, dict):
            return _errors(400, "no data provided")
        options = body.get("options")
        current = 0 if secret is None else secret.current
        if isinstance(options, dict) and options.get("cas") is not None:
            try:
                cas = int(options["cas"])
            except (TypeError, ValueError):
                return _errors(400, "error parsing check-and-set parameter")
            if cas != current:
                return _errors(400, "check-and-set parameter did not match the current version")
        secret = self._v2.setdefault(key, _V2Secret())
        number = secret.current + 1
        secret.versions[number] = _Version(data)
        return _Reply(200, _envelope(secret.version_metadata(number), mount_type="kv"))

    @staticmethod
    def _kv2_metadata(secret: _V2Secret | None) -> _Reply:
        if secret is None or not secret.versions:
            return NOT_FOUND
        first, last = secret.versions[min(secret.versions)], secret.versions[secret.current]
        data = {
            "cas_required": False,
            "created_time": _rfc3339(first.created),
            "current_version": secret.current,
            "custom_metadata": secret.custom_metadata,
            "delete_version_after": "0s",
            "max_versions": 0,
            "oldest_version": 0,
            "updated_time": _rfc3339(last.created),
            "versions": {str(n): v.metadata() for n, v in sorted(secret.versions.items())},
        }
        return _Reply(200, _envelope(data, mount_type="kv"))

    def _kv1(self, method: str, ns: str, mount: str, path: str, body: dict[str, Any]) -> _Reply:
        if not path:
            return UNSUPPORTED if method != "GET" else NOT_FOUND
        key = (ns, mount, path)
        if method == "GET":
            data = self._v1.get(key)
            if data is None:
                return NOT_FOUND
            ttl = parse_duration(data.get("ttl", data.get("lease")))
            lease = KV_V1_DEFAULT_LEASE if ttl is None else int(ttl)
            return _Reply(200, _envelope(data, lease_duration=lease, mount_type="kv"))
        if method in _WRITE:
            if not body:
                return _errors(400, "missing data fields")
            self._v1[key] = body
            return NO_CONTENT
        if method == "DELETE":
            self._v1.pop(key, None)
            return NO_CONTENT
        return UNSUPPORTED


def seed_policy_from_vault(
    path: str, key: str = "password", namespace: str = "default"
) -> dict[str, Any]:
    """The seed's policy with its password read from Vault at `path` instead of written in it."""
    policy = seed_policy(namespace)
    del policy["spec"]["password"]
    policy["spec"]["passwordFrom"] = {"vault": {"path": path, "key": key}}
    return policy
