"""Which policies use which stored secrets, learnt from the hook calls the server answers.

The rotation watcher polls each secret in here once per interval, however many policies
use it, and knows from here which policies to have re-translated when one changes.
The resolver records a reference once the tenancy guard has passed it, before the fetch,
so a secret that is missing or a store that is down is still watched; and records a
policy that reads no store (any more) with no references, so it is forgotten.
A reference pinned to a version (Vault `version`, AWS `versionId`) never changes and is
not kept.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable

from compiler.model import AwsSecretRef, PolicyRef, StoreRef, VaultRef


def watchable(ref: StoreRef) -> bool:
    if isinstance(ref, VaultRef):
        return ref.version is None
    assert isinstance(ref, AwsSecretRef)
    return ref.version_id is None


class SecretRegistry:
    """Thread-safe map of policies to the secrets (documents) they read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refs: dict[PolicyRef, dict[Hashable, StoreRef]] = {}

    def record(self, policy: PolicyRef, refs: Iterable[StoreRef]) -> None:
        """What `policy` reads now (replacing what it read before)."""
        watched: dict[Hashable, StoreRef] = {ref.document: ref for ref in refs if watchable(ref)}
        with self._lock:
            if watched:
                self._refs[policy] = watched
            else:
                self._refs.pop(policy, None)

    def forget(self, policy: PolicyRef) -> None:
        with self._lock:
            self._refs.pop(policy, None)

    def documents(self) -> dict[Hashable, StoreRef]:
        """Every secret in use, once, with a reference that reads it."""
        with self._lock:
            return {doc: ref for refs in self._refs.values() for doc, ref in refs.items()}

    def policies_using(self, documents: Iterable[Hashable]) -> set[PolicyRef]:
        wanted = set(documents)
        with self._lock:
            return {policy for policy, refs in self._refs.items() if wanted & refs.keys()}

    def policies(self) -> set[PolicyRef]:
        """Every policy that reads a watched secret now: the only ones worth a patch."""
        with self._lock:
            return set(self._refs)

    def documents_of(self, policy: PolicyRef) -> set[Hashable]:
        with self._lock:
            return set(self._refs.get(policy, {}))
