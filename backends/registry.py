"""Which policies read which stored secrets, as the Kubernetes API server holds them.

The rotation watcher polls each secret in here once per interval, however many policies
use it, and knows from here which policies to have re-translated when one changes. It is
built from the policies the watcher lists from the API server at each poll, never from
what a hook call carries: whoever can call the hook can send any object, and must not be
able to make the server watch, or patch, anything. So each entry is a policy as the API
server holds it (with the resourceVersion a patch is made against), reading a secret
that:

- its own namespace may read (the tenancy guard the hook applies);
- sits in a store this server has configured (a store it cannot ask is not polled);
- is not pinned to a version (Vault `version`, AWS `versionId`), which never changes.

A policy deleted, or no longer reading a store, is gone from the next list and so from
here. At most `limit` policies are kept (so at most that many secrets, and store
requests per poll); the others are counted.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from backends.tenancy import tenancy_problem
from compiler.errors import PolicyError
from compiler.model import (
    POLICY_API_VERSION,
    POLICY_KIND,
    AwsSecretRef,
    PasswordFrom,
    PolicyRef,
    StoreRef,
    UsersFrom,
    VaultRef,
)
from compiler.parse import IgnoredResource, parse_object

DEFAULT_LIMIT = 2000  # policies watched at most (the watcher's --rotation-max-policies)


def watchable(ref: StoreRef) -> bool:
    if isinstance(ref, VaultRef):
        return ref.version is None
    assert isinstance(ref, AwsSecretRef)
    return ref.version_id is None


@dataclass(frozen=True)
class WatchedPolicy:
    """A policy as listed from the API server, reading one watched secret."""

    ref: PolicyRef
    resource_version: str  # a patch is made against this very version of the object
    revision: str | None  # its spec.credentialsRevision when listed
    store: StoreRef
    uid: str | None = None  # metadata.uid, to name the object in Kubernetes Events


@dataclass(frozen=True)
class Templates:
    """The tenancy guard's templates (the server's settings), `{namespace}` in each."""

    vault: str
    aws: str


def watched_policy(
    obj: Mapping[str, Any], stores: Collection[str], templates: Templates
) -> WatchedPolicy | None:
    """`obj` (a listed ListenerContextExample) as a watched policy, or None if it reads
    nothing the watcher may poll: plain text, a pinned version, a store not configured, a
    reference the tenancy guard refuses, or a policy the hook would reject as malformed."""
    metadata = obj.get("metadata")
    version = metadata.get("resourceVersion") if isinstance(metadata, Mapping) else None
    if not isinstance(version, str) or not version:
        return None
    typed = {"apiVersion": POLICY_API_VERSION, "kind": POLICY_KIND, **obj}
    try:
        policy = parse_object(typed, PolicyRef("<listed>", "<listed>"))
    except PolicyError:
        return None
    if isinstance(policy, IgnoredResource):
        return None
    spec = policy.credentials
    if not isinstance(spec, PasswordFrom | UsersFrom):
        return None
    ref = spec.store
    if not watchable(ref) or ref.store not in stores:
        return None
    if tenancy_problem(ref, policy.ref.namespace, templates.vault, templates.aws) is not None:
        return None
    return WatchedPolicy(policy.ref, version, policy.credentials_revision, ref, policy.uid)


NAMED_UNWATCHED = 3  # policies over the limit kept by name, for the log line


@dataclass(frozen=True)
class Admitted:
    """What one `replace` kept, and what the limit left out."""

    watched: int
    unwatched: int  # policies over the limit
    first_unwatched: tuple[PolicyRef, ...]  # the first few of them, in list order


class SecretRegistry:
    """Policies and the secrets (documents) they read; replaced whole at each poll.

    Only the watcher's thread uses it; reads during a poll see one consistent list.
    """

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self._policies: dict[PolicyRef, WatchedPolicy] = {}

    def replace(self, policies: Iterable[WatchedPolicy]) -> Admitted:
        """What the API server holds now; the first `limit` policies are kept.

        `policies` is read one at a time and nothing beyond the limit is kept but a count
        and a few names. If reading it fails, the registry stays as it was.
        """
        kept: dict[PolicyRef, WatchedPolicy] = {}
        unwatched = 0
        first_unwatched: list[PolicyRef] = []
        for policy in policies:
            if policy.ref in kept:
                continue
            if len(kept) < self.limit:
                kept[policy.ref] = policy
                continue
            unwatched += 1
            if len(first_unwatched) < NAMED_UNWATCHED:
                first_unwatched.append(policy.ref)
        self._policies = kept
        return Admitted(len(kept), unwatched, tuple(first_unwatched))

    def get(self, policy: PolicyRef) -> WatchedPolicy | None:
        return self._policies.get(policy)

    def documents(self) -> dict[Hashable, StoreRef]:
        """Every secret in use, once, with a reference that reads it."""
        return {policy.store.document: policy.store for policy in self._policies.values()}

    def policies_using(self, documents: Iterable[Hashable]) -> set[PolicyRef]:
        wanted = set(documents)
        return {ref for ref, policy in self._policies.items() if policy.store.document in wanted}

    def policies(self) -> set[PolicyRef]:
        """Every policy that reads a watched secret now: the only ones worth a patch."""
        return set(self._policies)

    def documents_of(self, policy: PolicyRef) -> set[Hashable]:
        watched = self._policies.get(policy)
        return {watched.store.document} if watched is not None else set()
