"""Step 2 of the pipeline, resolve: a policy's credentials, from wherever it names them.

Plain text comes from the policy itself; `passwordFrom` and `usersFrom` go through the
tenancy guard, then the shared cache, then the store. A call begins every store lookup
before it waits for any, each store fetches on threads of its own, and the call waits for
all of them against one deadline: a slow or hung store costs a call at most that one
timeout, and costs nothing to policies that do not use it.
Every failure becomes a PolicyError that denies that policy's users: nothing here ever
lets anyone in on failure.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from cachetools import LRUCache

from backends import metrics
from backends.cache import Lookup, SecretCache
from backends.stores import SecretStore, StoredSecret, StoreError, StoreOutcome
from backends.tenancy import (
    DEFAULT_AWS_TEMPLATE,
    DEFAULT_VAULT_TEMPLATE,
    check_template,
    tenancy_problem,
)
from backends.values import StoredValueError, password_credential, user_credentials
from compiler.errors import (
    PlaintextForbiddenError,
    PolicyError,
    TenancyError,
    TooLargeError,
    UnresolvedCredentialError,
    internal_error,
)
from compiler.memo import BoundedMemo
from compiler.model import (
    PLAIN,
    Credentials,
    PasswordFrom,
    PlainCredentials,
    Policy,
    PolicyRef,
    Secrets,
    Source,
    StoreRef,
    UsersFrom,
)
from compiler.pipeline import failed_source
from compiler.users import Resolved

# Users one policy may bring: beyond it the policy is left out (TooLargeError). About what
# one HTTP connection manager's table can hold in Envoy Gateway's default 4 MiB message.
DEFAULT_MAX_USERS_PER_POLICY = 100_000

REVISIONS_KEPT = 100_000  # policies whose last spec.credentialsRevision is remembered
MEMO_CREDENTIALS = 1_000_000  # credentials kept resolved across calls (about 200 MB at most)

_FIXES = {
    StoreOutcome.NOT_FOUND: "create the secret or correct the reference",
    StoreOutcome.FORBIDDEN: "grant the server read access to it (docs/backends.md)",
    StoreOutcome.NOT_CONFIGURED: "configure that store on the server (docs/backends.md)",
    StoreOutcome.INVALID: "store the value in a form docs/backends.md describes",
}
_RETRY_FIX = "its users are denied until the store answers again; check the store"


@dataclass(frozen=True)
class ResolverSettings:
    cache_ttl: float = 60.0
    max_stale: float = 900.0
    timeout: float = 2.0
    forbid_plaintext: bool = False
    vault_path_template: str = DEFAULT_VAULT_TEMPLATE
    aws_secret_template: str = DEFAULT_AWS_TEMPLATE
    max_users_per_policy: int = DEFAULT_MAX_USERS_PER_POLICY


@dataclass(frozen=True)
class _Begun:
    """A store-backed policy whose lookup has begun (`SecretCache.start`)."""

    policy: Policy
    field: str
    lookup: Lookup


class CredentialResolver:
    """Resolves policies' credentials; one instance is shared by every hook call."""

    def __init__(
        self,
        settings: ResolverSettings | None = None,
        stores: Mapping[str, SecretStore] | None = None,
    ) -> None:
        self.settings = settings or ResolverSettings()
        check_template(self.settings.vault_path_template)
        check_template(self.settings.aws_secret_template)
        self.stores = dict(stores or {})
        self._cache = SecretCache(
            self.settings.cache_ttl, self.settings.max_stale, wait=self.settings.timeout + 1.0
        )
        # Bounded: a caller of the hook can make up any number of policy names.
        self._revisions: LRUCache[PolicyRef, str | None] = LRUCache(REVISIONS_KEPT)
        self._revisions_lock = threading.Lock()
        # Envoy Gateway sends the same policies with every listener of every translation:
        # a policy whose value key (the policy, the version of its secret) is unchanged is
        # not decoded again. One entry per policy, the latest; bounded by the credentials
        # held.
        self._memo: BoundedMemo[PolicyRef, Resolved] = BoundedMemo(
            MEMO_CREDENTIALS, lambda held: len(held.credentials) + 1
        )

    def resolve_all(self, policies: Sequence[Policy]) -> list[Resolved]:
        """Every policy's credentials or error; the stores' lookups all run at once.

        Every lookup starts before any is waited for, and all share one deadline (the
        backend timeout and a second): a call costs at most that, however many policies
        and stores it has, and a store that hangs never holds up a policy that does not
        use it beyond it.
        """
        return self._resolve_each(policies)

    def _resolve_each(self, policies: Sequence[Policy]) -> list[Resolved]:
        begun = [self._begin(policy) for policy in policies]
        deadline = time.monotonic() + self._cache.wait
        return [self._end(item, deadline) for item in begun]

    def resolve(self, policy: Policy) -> Resolved:
        """One policy's credentials or error."""
        return self._resolve_each((policy,))[0]

    def _begin(self, policy: Policy) -> Resolved | _Begun:
        try:
            return self._start(policy)
        except PolicyError as error:
            return self._failed(policy, error)
        except Exception as error:  # unforeseen: this policy's error, never the call's
            return self._failed(policy, internal_error(policy.ref, "spec", error))

    def _end(self, item: Resolved | _Begun, deadline: float) -> Resolved:
        if isinstance(item, Resolved):
            return item
        try:
            return self._remembered(item.policy, self._finish(item, deadline), item.field)
        except PolicyError as error:
            return self._failed(item.policy, error)
        except Exception as error:  # unforeseen: this policy's error, never the call's
            return self._failed(item.policy, internal_error(item.policy.ref, item.field, error))

    def _failed(self, policy: Policy, error: PolicyError) -> Resolved:
        """The policy's failure, as a value (its source names the family and message).

        The error is kept without the frames it went through, which hold whole calls, nor
        with the store error it replaced: it may stay in memos for a while.
        """
        error.__traceback__, error.__context__ = None, None
        return Resolved(policy, error=error, source=failed_source(error))

    def _start(self, policy: Policy) -> Resolved | _Begun:
        """Resolve plain text now; for a store, check the reference and begin the lookup."""
        spec = policy.credentials
        if isinstance(spec, PlainCredentials):
            if self.settings.forbid_plaintext:
                raise PlaintextForbiddenError(
                    policy.ref,
                    "spec.password",
                    "is plain text, which this server forbids",
                    "move the password to a store and use passwordFrom",
                )
            return self._remembered(policy, None)
        source = _reference_field(spec)
        field = f"{source}.{spec.store.field}"
        store = self._store_for(policy, spec.store, field)
        # Only now: a policy the tenancy guard refused must not evict anyone's secret.
        self._note_revision(policy, spec.store)
        ref = spec.store
        return _Begun(
            policy, field, self._cache.start(ref.document, store.name, lambda: store.fetch(ref))
        )

    def _finish(self, begun: _Begun, deadline: float) -> StoredSecret:
        try:
            return cast(StoredSecret, self._cache.finish(begun.lookup, deadline - time.monotonic()))
        except StoreError as error:
            spec = begun.policy.credentials
            assert not isinstance(spec, PlainCredentials)
            raise self._unresolved(
                begun.policy, spec.store, begun.field, str(error), error.outcome
            ) from None

    def _remembered(self, policy: Policy, stored: StoredSecret | None, field: str = "") -> Resolved:
        """The policy's credentials from `stored` (None: its own spec.password), decoded
        once per value key: the same policy over the same version is not decoded again."""
        source = PLAIN if stored is None else _stored_source(policy, stored)
        held = self._memo.get(policy.ref)
        if held is not None and held.source == source and held.policy == policy:
            return held
        resolved = Resolved(policy, self._credentials(policy, stored, field), source=source)
        self._memo.put(policy.ref, resolved)
        return resolved

    def _credentials(self, policy: Policy, stored: StoredSecret | None, field: str) -> Credentials:
        spec = policy.credentials
        if isinstance(spec, PlainCredentials):
            password = Secrets((spec.password.reveal(),))
            return Credentials((spec.username,), password, "spec.username", "spec.password")
        assert stored is not None
        source = _reference_field(spec)
        document = stored.content
        try:
            if isinstance(spec, UsersFrom):
                credentials = user_credentials(document, spec.store, source)
            else:
                credentials = password_credential(document, spec.store, spec.username, source)
        except StoredValueError as error:
            raise self._unresolved(
                policy, spec.store, field, str(error), StoreOutcome.INVALID
            ) from None
        except Exception as error:  # a value of a shape no rule foresaw: this secret only
            problem = f"the stored value could not be read ({type(error).__name__})"
            raise self._unresolved(
                policy, spec.store, field, problem, StoreOutcome.INVALID
            ) from None
        limit = self.settings.max_users_per_policy
        if len(credentials) > limit:
            raise TooLargeError(
                policy.ref,
                field,
                f"the secret holds {len(credentials)} users, more than this server takes "
                f"from one policy ({limit})",
                "split the users across several policies and secrets, or raise "
                "--max-users-per-policy (docs/policies.md: how many users fit)",
            )
        return credentials

    def close(self) -> None:
        """Let the stores' requests in flight finish, and start no other (server shutdown)."""
        self._cache.close()
        for store in self.stores.values():
            store.close()

    def refresh(self, ref: StoreRef) -> StoredSecret:
        """Fetch `ref` again now (the rotation watcher saw a new version)."""
        store = self.stores[ref.store]
        self._cache.invalidate(ref.document)
        return cast(
            StoredSecret, self._cache.get(ref.document, store.name, lambda: store.fetch(ref))
        )

    def cached_version(self, ref: StoreRef) -> str | None:
        """The version of what the cache holds for `ref`, if anything."""
        held = self._cache.peek(ref.document)
        return held.version if isinstance(held, StoredSecret) else None

    def _note_revision(self, policy: Policy, ref: StoreRef) -> None:
        """A new spec.credentialsRevision means a newer version exists: do not serve the cache.

        The watcher of whichever replica saw the rotation wrote it; this makes every
        replica fetch again when Envoy Gateway calls it for the re-translation.
        """
        revision = policy.credentials_revision
        with self._revisions_lock:
            known = policy.ref in self._revisions
            seen = self._revisions.get(policy.ref)
            self._revisions[policy.ref] = revision
        if known and seen != revision:
            self._cache.invalidate(ref.document)

    def _store_for(self, policy: Policy, ref: StoreRef, field: str) -> SecretStore:
        """The store `ref` names, once the tenancy guard lets the policy read it."""
        problem = tenancy_problem(
            ref,
            policy.ref.namespace,
            self.settings.vault_path_template,
            self.settings.aws_secret_template,
        )
        if problem is not None:
            raise TenancyError(
                policy.ref,
                field,
                problem,
                "reference a secret under the path of the policy's own namespace",
            )
        store = self.stores.get(ref.store)
        if store is None:
            raise self._unresolved(
                policy,
                ref,
                field,
                f"no {ref.store} store is configured on the server",
                StoreOutcome.NOT_CONFIGURED,
            )
        return store

    @staticmethod
    def _unresolved(
        policy: Policy, ref: StoreRef, field: str, problem: str, outcome: StoreOutcome
    ) -> UnresolvedCredentialError:
        metrics.UNRESOLVED_DENIALS.labels(ref.store).inc()
        return UnresolvedCredentialError(
            policy.ref, field, problem, _FIXES.get(outcome, _RETRY_FIX), outcome.value
        )


def _stored_source(policy: Policy, stored: StoredSecret) -> Source:
    """A stored secret as a value: the document read and the version it had."""
    spec = policy.credentials
    assert not isinstance(spec, PlainCredentials)
    return (*(str(part) for part in spec.store.document), stored.version)


def _reference_field(spec: PasswordFrom | UsersFrom) -> str:
    """Where a policy names its store: the field its errors point at."""
    return "spec.passwordFrom" if isinstance(spec, PasswordFrom) else "spec.usersFrom"
