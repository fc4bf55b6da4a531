"""What every secret store has in common: a fetch of one whole secret, and its failures."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from compiler.model import StoreRef


class StoreOutcome(StrEnum):
    """What a backend request came to: the metric label and log value (never a path or a
    value)."""

    OK = "ok"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    INVALID = "invalid"
    NOT_CONFIGURED = "not_configured"
    ERROR = "error"


class StoreError(Exception):
    """A store did not give a secret. The message says why and never quotes a secret."""

    def __init__(self, store: str, outcome: StoreOutcome, message: str) -> None:
        super().__init__(message)
        self.store = store
        self.outcome = outcome


@dataclass(frozen=True)
class StoredSecret:
    """One whole secret as read (a Vault data map, or an AWS SecretString) and its version."""

    content: Any = field(repr=False)
    version: str  # Vault KV v2 version, AWS VersionId, or a digest of the content (KV v1)


class SecretStore(Protocol):
    """Reads secrets, and tells their current version for the rotation watcher."""

    name: str

    def fetch(self, ref: StoreRef) -> StoredSecret:
        """The secret and its version; raise StoreError when it cannot be had."""
        ...

    def version(self, ref: StoreRef) -> str:
        """The version `fetch` would read now, as cheaply as the store allows."""
        ...

    def close(self) -> None:
        """Stop any background work (server shutdown)."""
        ...


# The key of content_digest: random per process, and it never leaves the process.
_DIGEST_KEY = secrets.token_bytes(32)


def content_digest(content: Any) -> str:
    """A version for stores without one (KV v1): a keyed digest of the content.

    Keyed (HMAC-SHA256) because the version feeds spec.credentialsRevision, which anyone
    who can read policies reads: a plain hash of the content would let them test guesses
    of a weak password offline. The key is this process's own, so replicas tell
    different versions for one content; that costs at most one extra patch when another
    replica starts leading (docs/rotation.md).
    """
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    digest = hmac.new(_DIGEST_KEY, canonical.encode(), hashlib.sha256).hexdigest()
    return "hmac-sha256:" + digest[:32]
