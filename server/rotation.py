"""The rotation watcher: a password rotated in a store reaches the gateways on its own.

Envoy Gateway calls the hook only when it re-translates, and it re-translates a policy
only when the policy's spec changes. So every `--rotation-poll-interval` (with jitter)
the watcher asks each store for the current version of every secret the served policies
use: one request per secret, however many policies and references share it, several
requests in flight at once. When a version changed, it refreshes the cache and then
writes a new `spec.credentialsRevision` (a digest of the versions the policy reads) into
each policy that uses the secret. Envoy Gateway sees a spec change, re-translates and
calls the hook, which now compiles the new password.

A secret that is gone (deleted, destroyed, no version at the stage read) has the version
"absent", so a deletion reaches Envoy like a rotation, and so does a secret that appears
or comes back. A store that fails (timeout, sealed, throttled, 5xx) changes nothing.

Every replica polls (each refreshes its own cache); only the holder of a Lease patches.
A secret that flips several times within one interval is one change (it is polled once),
and a policy that already holds the revision is not patched again.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import structlog

from backends import CredentialResolver, metrics
from backends.stores import NOT_FOUND, OK, SecretStore, StoreError
from compiler.model import PolicyRef, StoreRef, VaultRef

JITTER = 0.1  # each wait is the interval +- 10 %
CHECKS_AT_ONCE = 8  # version requests in flight at once: a poll costs about one timeout
ABSENT = "absent"  # the version of a secret that is gone
log = structlog.get_logger("server.rotation")

# A document in use, and a reference that reads it.
Use = tuple[Hashable, StoreRef]


class Patcher(Protocol):
    def ensure_revision(self, policy: PolicyRef, revision: str) -> bool: ...


class Elector(Protocol):
    def lead(self) -> bool: ...

    def release(self) -> None: ...


@runtime_checkable
class SharedVersions(Protocol):
    """A store whose one request answers for every reference to one secret (AWS).

    `secret_of` says which secret a reference names (None: not known yet, ask after the
    others); `describe` is the one request; `version_in` reads a reference's version in
    its answer, raising StoreError(NOT_FOUND) when the secret is gone for that reference.
    """

    def secret_of(self, ref: StoreRef) -> Hashable | None: ...

    def describe(self, ref: StoreRef) -> tuple[Hashable, Mapping[str, Any]]: ...

    def version_in(self, answer: Mapping[str, Any], ref: StoreRef) -> str: ...


@dataclass
class PollReport:
    """What one poll did; for logs and tests."""

    requests: int = 0
    changed: list[Hashable] = field(default_factory=list)
    patched: list[PolicyRef] = field(default_factory=list)
    failed: list[PolicyRef] = field(default_factory=list)  # patches refused: still pending
    leader: bool = False


@dataclass
class _Asked:
    """One store request's outcome for the references it answered."""

    versions: dict[Hashable, str | StoreError]
    secret: Hashable | None = None  # SharedVersions: which secret answered
    answer: Mapping[str, Any] | None = None


class RotationWatcher:
    def __init__(
        self,
        resolver: CredentialResolver,
        patcher: Patcher,
        elector: Elector,
        interval: float,
    ) -> None:
        self._resolver = resolver
        self._patcher = patcher
        self._elector = elector
        self.interval = interval
        # Last version seen per document in use; ABSENT for a secret that is gone.
        self._versions: dict[Hashable, str] = {}
        # Policies whose revision must be written: kept until the leader has written it, so
        # a failed patch, or a change seen while another replica led, is not lost.
        self._pending: set[PolicyRef] = set()
        self._pool = ThreadPoolExecutor(CHECKS_AT_ONCE, thread_name_prefix="rotation-check")
        self._led = False  # whether this replica ever held the Lease
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rotation-watcher", daemon=True)

    def start(self) -> None:
        log.info("rotation.started", interval_seconds=self.interval)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling, then give the Lease up so another replica takes over at once."""
        self._stop.set()
        started = self._thread.ident is not None
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)
        # Only a replica that led has a Lease to give up; a poll still running may still patch.
        if started and self._led and not self._thread.is_alive():
            try:
                self._elector.release()
            except Exception as error:  # the API server: the Lease then runs out on its own
                log.warning("rotation.release_failed", **_problem(error))

    def _run(self) -> None:
        while not self._stop.wait(self.interval * random.uniform(1 - JITTER, 1 + JITTER)):  # noqa: S311
            try:
                self.poll_once()
            except Exception:  # a bug: log it, try again next interval
                log.exception("rotation.poll_failed")

    def poll_once(self) -> PollReport:
        """Ask every secret in use for its version once; act on the ones that changed."""
        report = PollReport()
        registry = self._resolver.registry
        documents = registry.documents()
        self._versions = {d: v for d, v in self._versions.items() if d in documents}
        for document, outcome in self._check(documents, report).items():
            if self._note(document, documents[document], outcome):
                report.changed.append(document)
        self._refresh([documents[document] for document in report.changed])
        affected = registry.policies_using(report.changed)
        self._pending = (self._pending | affected) & registry.policies()
        report.leader = self._lead()
        if report.leader:
            self._patch(report)
        if report.changed:
            log.info(
                "rotation.changed", secrets=len(report.changed), policies=len(affected),
                patched=len(report.patched), failed=len(report.failed), leader=report.leader,
            )  # fmt: skip
        return report

    def revision(self, policy: PolicyRef) -> str:
        """A digest of the versions `policy` reads: the same on every replica (KV v1 aside).

        Versions are store version numbers and IDs, "absent", or (KV v1) a digest keyed
        with the process's own key: nothing here lets a reader of the policy test guesses
        of a password. The price: replicas differ on KV v1 (docs/rotation.md).
        """
        lines = sorted(
            f"{document}={self._versions.get(document, '')}"
            for document in self._resolver.registry.documents_of(policy)
        )
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]

    # -- versions ------------------------------------------------------------------------

    def _check(
        self, documents: Mapping[Hashable, StoreRef], report: PollReport
    ) -> dict[Hashable, str | StoreError]:
        """Every document's version (or the store's error), one request per secret.

        References a store cannot place yet (an AWS ARN never answered for) are asked
        after the others: by then an answer about a name may have shown it is the same
        secret, and that answer serves it without a request.
        """
        results: dict[Hashable, str | StoreError] = {}
        answers: dict[tuple[str, Hashable], Mapping[str, Any]] = {}
        groups, later = self._grouped(documents)
        self._ask_all(groups, results, answers, report)
        groups = {}
        for document, ref in later:
            store = self._resolver.stores[ref.store]
            assert isinstance(store, SharedVersions)
            key = (ref.store, store.secret_of(ref) or document)
            if key in answers:
                results[document] = _version_in(store, answers[key], ref)
            else:
                groups.setdefault(key, []).append((document, ref))
        self._ask_all(groups, results, answers, report)
        return results

    def _grouped(
        self, documents: Mapping[Hashable, StoreRef]
    ) -> tuple[dict[tuple[str, Hashable], list[Use]], list[Use]]:
        """The documents by (store, secret), one request each; and those to place later.

        Documents of a store that is not configured are left out: nothing to ask.
        """
        groups: dict[tuple[str, Hashable], list[Use]] = {}
        later: list[Use] = []
        for document, ref in documents.items():
            store = self._resolver.stores.get(ref.store)
            if store is None:
                continue
            secret = store.secret_of(ref) if isinstance(store, SharedVersions) else document
            if secret is None:
                later.append((document, ref))
            else:
                groups.setdefault((ref.store, secret), []).append((document, ref))
        return groups, later

    def _ask_all(
        self,
        groups: Mapping[tuple[str, Hashable], list[Use]],
        results: dict[Hashable, str | StoreError],
        answers: dict[tuple[str, Hashable], Mapping[str, Any]],
        report: PollReport,
    ) -> None:
        """One request per group, CHECKS_AT_ONCE at a time."""
        keys = list(groups)
        stores = [self._resolver.stores[name] for name, _ in keys]
        asked = self._pool.map(self._ask, stores, [groups[key] for key in keys])
        for key, store, outcome in zip(keys, stores, asked, strict=True):
            report.requests += 1
            results.update(outcome.versions)
            if outcome.answer is not None:
                answers[(key[0], outcome.secret)] = outcome.answer
            self._log_failure(store, groups[key], outcome)

    @staticmethod
    def _ask(store: SecretStore, uses: list[Use]) -> _Asked:
        """One request to `store` for `uses`, which all read one secret."""
        first = uses[0][1]
        try:
            if isinstance(store, SharedVersions):
                secret, answer = store.describe(first)
            else:
                version = store.version(first)
        except StoreError as error:
            metrics.BACKEND_REQUESTS.labels(store.name, error.outcome).inc()
            return _Asked({document: error for document, _ in uses})
        metrics.BACKEND_REQUESTS.labels(store.name, OK).inc()
        if not isinstance(store, SharedVersions):
            return _Asked({uses[0][0]: version})
        versions = {document: _version_in(store, answer, ref) for document, ref in uses}
        return _Asked(versions, secret, answer)

    def _log_failure(self, store: SecretStore, uses: list[Use], outcome: _Asked) -> None:
        """A failed version check, naming the secret and the policies that wait on it.

        Paths and secret IDs are logged like everywhere else (docs/security.md); never in
        a metric label.
        """
        errors = [e for e in outcome.versions.values() if isinstance(e, StoreError)]
        failures = [e for e in errors if e.outcome != NOT_FOUND]  # NOT_FOUND: absent
        if not failures:
            return
        policies = self._resolver.registry.policies_using([document for document, _ in uses])
        log.warning(
            "rotation.version_failed",
            store=store.name,
            secret=_name(uses[0][1]),
            outcome=failures[0].outcome,
            policies=",".join(sorted(str(policy) for policy in policies)),
        )

    def _note(self, document: Hashable, ref: StoreRef, outcome: str | StoreError) -> bool:
        """Keep the version seen; whether it is a change that must reach Envoy.

        A failing store is no change. First sight compares with what the cache holds,
        which may predate a rotation; nothing held (the fetch failed, the secret did not
        exist) and a version now is a change too: the policy is denied until it is
        translated again.
        """
        if isinstance(outcome, StoreError):
            if outcome.outcome != NOT_FOUND:
                return False
            outcome = ABSENT
        known = self._versions.get(document) or self._resolver.cached_version(ref)
        self._versions[document] = outcome
        if known is None:
            return outcome != ABSENT
        return known != outcome

    def _refresh(self, refs: list[StoreRef]) -> None:
        """Fetch changed secrets again: the cache holds the new value, or drops a gone one."""
        for ref, error in zip(refs, self._pool.map(self._refetch, refs), strict=True):
            if error is not None and error.outcome != NOT_FOUND:
                log.warning(
                    "rotation.refresh_failed", store=ref.store, secret=_name(ref),
                    outcome=error.outcome,
                )  # fmt: skip

    def _refetch(self, ref: StoreRef) -> StoreError | None:
        try:
            self._resolver.refresh(ref)
        except StoreError as error:
            return error
        return None

    # -- Kubernetes ----------------------------------------------------------------------

    def _lead(self) -> bool:
        """Take or renew the Lease, at every poll: a leader that dies is replaced after
        one Lease duration, even while nothing changes."""
        try:
            leads = self._elector.lead()
        except Exception as error:  # the API server: no patch this time, pending kept
            log.warning("rotation.lease_failed", **_problem(error))
            return False
        self._led = self._led or leads
        return leads

    def _patch(self, report: PollReport) -> None:
        """Write each pending policy's revision; one refused patch does not stop the others."""
        for policy in sorted(self._pending):
            try:
                patched = self._patcher.ensure_revision(policy, self.revision(policy))
            except Exception as error:  # kept pending: tried again at the next poll
                report.failed.append(policy)
                log.warning("rotation.patch_failed", policy=str(policy), **_problem(error))
                continue
            self._pending.discard(policy)
            if patched:
                report.patched.append(policy)
                log.info("rotation.patched", policy=str(policy))


def _version_in(
    store: SharedVersions, answer: Mapping[str, Any], ref: StoreRef
) -> str | StoreError:
    try:
        return store.version_in(answer, ref)
    except StoreError as error:
        return error


def _name(ref: StoreRef) -> str:
    """The secret as the policy names it: a Vault path or an AWS secret ID."""
    return ref.path if isinstance(ref, VaultRef) else ref.secret_id


def _problem(error: Exception) -> dict[str, Any]:
    """What a Kubernetes failure was, for a log line: the status code and reason only.

    Not the message: an admission webhook writes what it likes there, and a policy's spec
    may hold a plain password.
    """
    status = getattr(error, "status", None)
    code = getattr(status, "code", None)
    if code is None:
        return {"error": type(error).__name__}
    return {"error": type(error).__name__, "status": code, "reason": getattr(status, "reason", "")}
