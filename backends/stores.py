"""What every secret store has in common: a fetch of one whole secret, and its failures."""

from __future__ import annotations

from typing import Any, Protocol

from compiler.model import StoreRef

# Metric labels and log values for what a backend request came to. Never a path or a value.
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

    def __init__(self, store: str, outcome: str, message: str) -> None:
        super().__init__(message)
        self.store = store
        self.outcome = outcome


class SecretStore(Protocol):
    """Reads one whole secret: a Vault data map, or an AWS SecretString."""

    name: str

    def fetch(self, ref: StoreRef) -> Any:
        """The secret's content; raise StoreError when it cannot be had."""
        ...
