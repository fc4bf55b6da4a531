"""HashiCorp Vault as a secret store, through hvac.

Secrets are read by their HTTP API path, as Vault policies spell it: a KV v2 secret is
`secret/data/<path>` (`?version=N` for an older version), a KV v1 secret `<mount>/<path>`.
The server logs in with a token (a file, or VAULT_TOKEN), Kubernetes auth (its service
account JWT and a role) or AppRole, and renews or logs in again before the token expires.
"""

from __future__ import annotations

import datetime
import os
import re
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import requests
import structlog

from backends.stores import StoredSecret, StoreError, StoreOutcome, content_digest
from compiler.model import KvEngine, StoreRef, VaultRef


class VaultAuth(StrEnum):
    """How the server logs in to Vault."""

    TOKEN = "token"  # noqa: S105 (a method name): a token file, or VAULT_TOKEN / ~/.vault-token
    KUBERNETES = "kubernetes"  # the pod's service-account JWT and a role
    APPROLE = "approle"  # a role_id and a secret_id file


AUTH_METHODS = tuple(method.value for method in VaultAuth)
SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105
RENEW_AT = 2 / 3  # of a token's lifetime: renew (or log in again) then
MIN_RECHECK = 0.5  # seconds; for a token Vault says has 0 s left
RENEW_RETRY = 5.0  # seconds between renewals that failed (the token may still have time)
RENEWER_WAKE = 60.0  # seconds: the renewer looks at least this often whether it is needed
log = structlog.get_logger("backends.vault")


@dataclass(frozen=True)
class VaultSettings:
    addr: str
    namespace: str | None = None
    ca_cert: str | None = None
    auth: VaultAuth = VaultAuth.TOKEN
    role: str | None = None  # Kubernetes auth role
    token_file: str | None = None  # token auth; without it VAULT_TOKEN / ~/.vault-token
    kubernetes_jwt_file: str = SERVICE_ACCOUNT_TOKEN
    kubernetes_mount: str = "kubernetes"
    approle_role_id: str | None = None
    approle_secret_id_file: str | None = None
    approle_mount: str = "approle"
    timeout: float = 2.0

    def __post_init__(self) -> None:
        if self.auth in set(VaultAuth):  # a method named by its string becomes the enum
            object.__setattr__(self, "auth", VaultAuth(self.auth))

    def check(self) -> None:
        """Refuse at start-up what cannot work, naming the setting to fix."""
        if self.auth not in set(VaultAuth):
            raise VaultSettingError("--vault-auth", f"must be one of {', '.join(AUTH_METHODS)}")
        if self.auth is VaultAuth.KUBERNETES and not self.role:
            raise VaultSettingError("--vault-role", "is required with --vault-auth=kubernetes")
        if self.auth is VaultAuth.APPROLE and not self.approle_role_id:
            raise VaultSettingError(
                "--vault-approle-role-id", "is required with --vault-auth=approle"
            )
        if self.auth is VaultAuth.APPROLE and not self.approle_secret_id_file:
            raise VaultSettingError(
                "--vault-approle-secret-id-file", "is required with --vault-auth=approle"
            )


class VaultSettingError(ValueError):
    """A Vault setting that cannot work; `setting` names the flag."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting} {problem}")
        self.setting, self.problem = setting, problem


class VaultStore:
    """Reads whole secrets from Vault; thread-safe."""

    name = "vault"

    def __init__(self, settings: VaultSettings) -> None:
        settings.check()
        self.settings = settings
        self._client = hvac.Client(
            url=settings.addr,
            namespace=settings.namespace or os.environ.get("VAULT_NAMESPACE") or None,
            verify=settings.ca_cert if settings.ca_cert else None,
            timeout=settings.timeout,  # type: ignore[arg-type]  # requests takes a float
        )
        self._lock = threading.Lock()
        self._renew_at: float | None = None  # None: log in / look the token up first
        # The token file is read at first use, not here: a Vault Agent that writes it a
        # moment after the server starts is the usual case, not an error.
        self._closed = threading.Event()
        self._renewer: threading.Thread | None = None

    def fetch(self, ref: StoreRef) -> StoredSecret:
        assert isinstance(ref, VaultRef)
        params = {"version": ref.version} if ref.version is not None else None
        response = self._get(ref.path, params)
        data = _kv_data(response, ref)
        if ref.engine is KvEngine.V1:
            return StoredSecret(data, content_digest(data))
        metadata = _mapping(_mapping(response.get("data")).get("metadata"))
        return StoredSecret(data, str(metadata.get("version", "")))

    def version(self, ref: StoreRef) -> str:
        """KV v2: `current_version` from the metadata (no secret read); KV v1: a keyed digest.

        A secret that is gone raises NOT_FOUND, which the rotation watcher takes as a change
        to "absent": no metadata, or a current version that is deleted or destroyed (a
        soft delete keeps `current_version`, so the number alone would never change).
        """
        assert isinstance(ref, VaultRef)
        if ref.version is not None:
            return str(ref.version)  # pinned: never changes
        if ref.engine is KvEngine.V1:
            return self.fetch(ref).version
        mount, marker, rest = ref.path.partition("/data/")
        if not marker:
            raise StoreError(
                self.name, StoreOutcome.INVALID, f"{ref.path} is not a KV v2 data path"
            )
        metadata = _mapping(self._get(f"{mount}/metadata/{rest}", None).get("data"))
        current = str(metadata.get("current_version") or "")
        state = _mapping(_mapping(metadata.get("versions")).get(current))
        if not current or current == "0" or state.get("destroyed") or _deleted(state):
            raise StoreError(
                self.name,
                StoreOutcome.NOT_FOUND,
                f"Vault has no live version of {ref.path} (deleted?)",
            )
        return current

    def _get(self, path: str, params: Mapping[str, Any] | None) -> Mapping[str, Any]:
        try:
            return self._request(path, params)
        except StoreError as error:
            if error.outcome != StoreOutcome.FORBIDDEN or not self._can_log_in_again:
                raise
        # A token revoked or expired early: log in (or re-read the token file) once more.
        with self._lock:
            self._renew_at = None
        return self._request(path, params)

    @property
    def _can_log_in_again(self) -> bool:
        return self.settings.auth is not VaultAuth.TOKEN or bool(self.settings.token_file)

    def _request(self, path: str, params: Mapping[str, Any] | None) -> Mapping[str, Any]:
        try:
            self._ensure_token()
            response = self._client.adapter.get(f"/v1/{path}", params=params)
        except hvac.exceptions.InvalidPath:
            raise StoreError(
                self.name, StoreOutcome.NOT_FOUND, f"Vault has no secret at {path}"
            ) from None
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized):
            raise StoreError(
                self.name, StoreOutcome.FORBIDDEN, f"Vault denied the server read access to {path}"
            ) from None
        except (hvac.exceptions.VaultDown, hvac.exceptions.VaultNotInitialized):
            raise StoreError(
                self.name, StoreOutcome.UNAVAILABLE, "Vault is sealed or not initialised"
            ) from None
        except hvac.exceptions.RateLimitExceeded:
            raise StoreError(
                self.name, StoreOutcome.UNAVAILABLE, "Vault is rate limiting the server"
            ) from None
        except requests.Timeout:
            raise StoreError(
                self.name,
                StoreOutcome.TIMEOUT,
                f"Vault did not answer within {self.settings.timeout:g}s",
            ) from None
        except requests.ConnectionError:
            raise StoreError(
                self.name, StoreOutcome.UNAVAILABLE, "Vault cannot be reached"
            ) from None
        except hvac.exceptions.VaultError as error:
            status = type(error).__name__
            raise StoreError(
                self.name, StoreOutcome.ERROR, f"Vault answered an error ({status})"
            ) from None
        if not isinstance(response, Mapping):
            raise StoreError(self.name, StoreOutcome.INVALID, f"Vault answered no JSON for {path}")
        return response

    def _ensure_token(self) -> None:
        with self._lock:
            if self._renew_at is not None and time.monotonic() < self._renew_at:
                return
            lifetime = self._refresh_token()
            # Vault counts a token's TTL in whole seconds: one about to expire says 0,
            # so look again soon rather than never.
            self._renew_at = (
                float("inf")
                if lifetime is None
                else time.monotonic() + max(lifetime * RENEW_AT, MIN_RECHECK)
            )
            if self._renewer is None and lifetime is not None:
                self._renewer = threading.Thread(
                    target=_keep_token,
                    args=(weakref.ref(self), self._closed),
                    name="vault-token-renewer",
                    daemon=True,
                )
                self._renewer.start()

    def _until_renewal(self) -> float | None:
        with self._lock:
            renew_at = self._renew_at
        if renew_at is None:
            return 0.0
        if renew_at == float("inf"):
            return None
        return max(renew_at - time.monotonic(), 0.0)

    def close(self) -> None:
        """Stop renewing the token (server shutdown)."""
        self._closed.set()

    def _refresh_token(self) -> float | None:
        """Log in, or renew the token; its lifetime in seconds (None: it never expires)."""
        settings = self.settings
        if settings.auth is VaultAuth.KUBERNETES:
            auth = self._client.auth.kubernetes.login(
                settings.role,
                _read(settings.kubernetes_jwt_file),
                mount_point=settings.kubernetes_mount,
            )
            log.info("vault.login", method="kubernetes", role=settings.role)
            return float(auth["auth"]["lease_duration"])
        if settings.auth is VaultAuth.APPROLE:
            auth = self._client.auth.approle.login(
                settings.approle_role_id,
                _read(str(settings.approle_secret_id_file)),
                mount_point=settings.approle_mount,
            )
            log.info("vault.login", method="approle")
            return float(auth["auth"]["lease_duration"])
        if settings.token_file:
            self._client.token = _read(settings.token_file)
        info = self._client.auth.token.lookup_self()["data"]
        if not info.get("expire_time") and not info.get("ttl"):
            return None  # a token without a TTL (root, or a periodic token's parent)
        if info.get("renewable"):
            renewed = self._client.auth.token.renew_self()
            log.info("vault.token_renewed")
            return float(renewed["auth"]["lease_duration"])
        # Not renewable: use it while it lasts; a token file may bring a new one by then.
        return float(info.get("ttl") or 0)


def _keep_token(store_ref: weakref.ref[VaultStore], closed: threading.Event) -> None:
    """Renew the token (or log in again) at 2/3 of its life, reads or no reads.

    Otherwise a server that reads nothing for longer than the token lives (no
    translations, every secret cached) would find it expired, and Vault's 403 would deny
    every Vault policy at once. Started by the first login, so a server that never reads
    Vault never contacts it. Holds the store weakly: a store nobody uses any more (closed
    or dropped) ends its renewer.
    """
    while True:
        store = store_ref()
        if store is None:
            return
        wait = store._until_renewal()
        del store
        if closed.wait(RENEWER_WAKE if wait is None else min(wait, RENEWER_WAKE)):
            return
        store = store_ref()
        if store is None:
            return
        try:
            store._ensure_token()  # does nothing before the renewal is due
        except Exception as error:  # logged; the next read retries too
            log.warning("vault.renew_failed", error=type(error).__name__)
            del store
            closed.wait(RENEW_RETRY)
        else:
            del store


def _kv_data(response: Any, ref: VaultRef) -> Mapping[str, Any]:
    data = response.get("data") if isinstance(response, Mapping) else None
    if ref.engine is KvEngine.V2:
        data = data.get("data") if isinstance(data, Mapping) else None
    if not isinstance(data, Mapping):
        hint = " (is it a KV v1 secret? set engine: kv-v1)" if ref.engine is KvEngine.V2 else ""
        raise StoreError("vault", StoreOutcome.INVALID, f"{ref.path} holds no key/value data{hint}")
    return data


def _mapping(value: Any) -> Mapping[str, Any]:
    """`value` if it is a JSON object, else an empty one: Vault's answers are read field by
    field, and a field of another shape (a KV v1 secret read as KV v2 can hold a
    `metadata` key of any type) reads as absent."""
    return value if isinstance(value, Mapping) else {}


def _deleted(state: Mapping[str, Any]) -> bool:
    """Whether a KV v2 version's `deletion_time` has passed.

    It is empty for a live version, and in the future for one `delete_version_after` will
    delete: that one still reads. Vault writes nanoseconds, which Python does not parse.
    """
    when = str(state.get("deletion_time") or "")
    if not when:
        return False
    stamp = re.sub(r"(\.\d{6})\d+", r"\1", when).replace("Z", "+00:00")
    try:
        deleted_at = datetime.datetime.fromisoformat(stamp)
    except ValueError:
        return True  # a deletion time we cannot read: Vault says it was deleted
    return deleted_at <= datetime.datetime.now(datetime.UTC)


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as error:
        raise StoreError(
            "vault", StoreOutcome.ERROR, f"cannot read {path}: {error.strerror}"
        ) from None
