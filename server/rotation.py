"""The rotation watcher: a password rotated in a store reaches the gateways on its own.

Envoy Gateway calls the hook only when it re-translates, and it re-translates a policy
only when the policy's spec changes. So every `--rotation-poll-interval` (with jitter)
the watcher lists the policies from the Kubernetes API server and asks each store for
the current version of every secret they read: one request per secret, however many
policies and references share it, several requests in flight at once. When a version
changed, it refreshes the cache and then writes a new `spec.credentialsRevision` (a
digest of the versions the policy reads) into each policy that uses the secret. Envoy
Gateway sees a spec change, re-translates and calls the hook, which now compiles the new
password.

What to watch comes from the API server only (backends/registry.py), never from a hook
call: a made-up policy sent to the hook is not watched, and cannot make the server patch
or forget anything. At most `--rotation-max-policies` policies are watched.

A secret that is gone (deleted, destroyed, no version at the stage read) has the version
"absent", so a deletion reaches Envoy like a rotation, and so does a secret that appears
or comes back. A store that fails (timeout, sealed, throttled, 5xx) changes nothing.

Every replica polls (each refreshes its own cache); only the holder of a Lease patches.
A secret that flips several times within one interval is one change (it is polled once),
and a policy that already holds the revision is not patched again. Each poll logs at most
one line per outcome, naming a few policies and counting the rest.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

import structlog
from prometheus_client import Gauge

from backends import CredentialResolver, metrics
from backends.registry import SecretRegistry, Templates, WatchedPolicy, watched_policy
from backends.stores import SecretStore, StoreError, StoreOutcome
from compiler.model import PolicyRef, StoreRef
from server.outcomes import Observers, PolicyIdentity, Source

JITTER = 0.1  # each wait is the interval +- 10 %
CHECKS_AT_ONCE = 8  # version requests in flight at once: a poll costs about one timeout
ABSENT = "absent"  # the version of a secret that is gone
UNANSWERED = "unanswered"  # seen first while its store failed: any version then is news
NAMED = 3  # policies or secrets a log line names; the others are counted
STOP_WAIT = 10.0  # seconds `stop` waits for a poll when given no deadline
log = structlog.get_logger("server.rotation")

WATCHED_POLICIES = Gauge(
    "extension_server_rotation_watched_policies",
    "Policies the rotation watcher watches (read a watched secret), at its last poll.",
)
WATCHED_SECRETS = Gauge(
    "extension_server_rotation_watched_secrets",
    "Secrets the rotation watcher asks for a version at each poll.",
)
UNWATCHED_POLICIES = Gauge(
    "extension_server_rotation_unwatched_policies",
    "Policies that read a secret but are not watched: beyond --rotation-max-policies.",
)

# A document in use, and a reference that reads it.
Use = tuple[Hashable, StoreRef]
T = TypeVar("T")


class Policies(Protocol):
    """The policies as the Kubernetes API server holds them."""

    def listed(self) -> Iterable[Mapping[str, Any]]: ...

    def ensure_revision(self, policy: WatchedPolicy, revision: str) -> bool: ...


class Elector(Protocol):
    def lead(self) -> bool: ...

    def release(self, timeout: float) -> None: ...


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

    watched: int = 0  # policies watched
    unwatched: int = 0  # policies over the limit
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


class _Stopped(Exception):
    """The watcher was stopped during a poll: the poll ends where it is."""


class RotationWatcher:
    def __init__(
        self,
        resolver: CredentialResolver,
        policies: Policies,
        elector: Elector,
        interval: float,
        *,
        stores: Collection[str] | None = None,
        limit: int | None = None,
        observers: Observers | None = None,
    ) -> None:
        """`stores`: the stores configured on this server (default: every store the
        resolver has); references to any other are not watched. `limit`: policies watched
        at most (default: the registry's)."""
        self._resolver = resolver
        self._policies = policies
        self._elector = elector
        self.interval = interval
        self._stores = frozenset(resolver.stores if stores is None else stores)
        settings = resolver.settings
        self._templates = Templates(settings.vault_path_template, settings.aws_secret_template)
        self.registry = SecretRegistry() if limit is None else SecretRegistry(limit)
        # Kubernetes Events and the audit trail hear of each rotation patched.
        self._observers = observers or Observers()
        # Last version seen per document in use; ABSENT for a secret that is gone.
        self._versions: dict[Hashable, str] = {}
        # Policies whose revision must be written: kept until the leader has written it, so
        # a failed patch, or a change seen while another replica led, is not lost.
        self._pending: set[PolicyRef] = set()
        self._unwatched_logged = 0
        self._pool = ThreadPoolExecutor(CHECKS_AT_ONCE, thread_name_prefix="rotation-check")
        self._led = False  # whether this replica ever held the Lease
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rotation-watcher", daemon=True)

    def start(self) -> None:
        log.info(
            "rotation.started", interval_seconds=self.interval, max_policies=self.registry.limit
        )
        self._thread.start()

    def stop(self, deadline: float | None = None) -> None:
        """Stop polling, then give the Lease up so that another replica takes over at once.

        Everything by `deadline` (time.monotonic()): a poll still waiting on a store or
        the API server is left behind (it patches nothing more), and the Lease is given
        up all the same.
        """
        self._stop.set()
        end = time.monotonic() + STOP_WAIT if deadline is None else deadline
        if self._thread.ident is not None:
            self._thread.join(timeout=max(0.0, end - time.monotonic()))
        self._pool.shutdown(wait=False, cancel_futures=True)
        if not self._led:
            return  # only a replica that led has a Lease to give up
        try:
            self._elector.release(max(0.0, end - time.monotonic()))
        except Exception as error:  # the API server: the Lease then runs out on its own
            log.warning("rotation.release_failed", **_problem(error))

    def _run(self) -> None:
        while not self._stop.wait(self.interval * random.uniform(1 - JITTER, 1 + JITTER)):  # noqa: S311
            try:
                self.poll_once()
            except _Stopped:
                return
            except Exception:  # a bug: log it, try again next interval
                log.exception("rotation.poll_failed")

    def poll_once(self) -> PollReport:
        """List the policies, ask every secret they read for its version once, act on the
        ones that changed."""
        report = PollReport()
        self._list(report)
        registry = self.registry
        documents = registry.documents()
        self._versions = {d: v for d, v in self._versions.items() if d in documents}
        for document, outcome in self._check(documents, report).items():
            if self._note(document, documents[document], outcome):
                report.changed.append(document)
        self._refresh([documents[document] for document in report.changed])
        affected = registry.policies_using(report.changed)
        self._pending = (self._pending | affected) & registry.policies()
        self._stopping()
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
            for document in self.registry.documents_of(policy)
        )
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]

    # -- what to watch -------------------------------------------------------------------

    def _list(self, report: PollReport) -> None:
        """Replace the registry with what the API server holds now.

        A list that fails keeps the last one: patches are made against the resourceVersion
        listed, so an outdated entry can only make a patch the API server refuses.
        """
        listed = (
            policy
            for obj in self._policies.listed()
            if (policy := watched_policy(obj, self._stores, self._templates)) is not None
        )
        try:
            admitted = self.registry.replace(listed)  # one page at a time
        except Exception as error:  # the API server: unreachable, 403, a list that expired
            log.warning("rotation.list_failed", **_problem(error))
        else:
            if admitted.unwatched != self._unwatched_logged and admitted.unwatched:
                shown = ",".join(str(ref) for ref in admitted.first_unwatched)
                more = admitted.unwatched - len(admitted.first_unwatched)
                log.warning(
                    "rotation.limit_reached", max_policies=self.registry.limit,
                    watched=admitted.watched, unwatched=admitted.unwatched,
                    some_unwatched=f"{shown},...(+{more} more)" if more else shown,
                )  # fmt: skip
            self._unwatched_logged = admitted.unwatched
        report.watched = len(self.registry.policies())
        report.unwatched = self._unwatched_logged
        WATCHED_POLICIES.set(report.watched)
        WATCHED_SECRETS.set(len(self.registry.documents()))
        UNWATCHED_POLICIES.set(report.unwatched)

    # -- versions ------------------------------------------------------------------------

    def _check(
        self, documents: Mapping[Hashable, StoreRef], report: PollReport
    ) -> dict[Hashable, str | StoreError]:
        """Every document's version (or the store's error), one request per secret.

        References a store cannot place yet (an AWS ARN never answered for) are asked
        after the others: by then an answer about a name may have shown it is the same
        secret, and that answer serves it without a request. The failures are logged at
        the end, one line per store and outcome.
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
        self._log_failures(documents, results)
        return results

    def _grouped(
        self, documents: Mapping[Hashable, StoreRef]
    ) -> tuple[dict[tuple[str, Hashable], list[Use]], list[Use]]:
        """The documents by (store, secret), one request each; and those to place later."""
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
        asked = self._all(self._ask, stores, [groups[key] for key in keys])
        for key, outcome in zip(keys, asked, strict=True):
            report.requests += 1
            results.update(outcome.versions)
            if outcome.answer is not None:
                answers[(key[0], outcome.secret)] = outcome.answer

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
        metrics.BACKEND_REQUESTS.labels(store.name, StoreOutcome.OK).inc()
        if not isinstance(store, SharedVersions):
            return _Asked({uses[0][0]: version})
        versions = {document: _version_in(store, answer, ref) for document, ref in uses}
        return _Asked(versions, secret, answer)

    def _log_failures(
        self, documents: Mapping[Hashable, StoreRef], results: Mapping[Hashable, Any]
    ) -> None:
        """One line per store and outcome for the version checks that failed, counting the
        secrets and the policies that wait on them and naming a few of each.

        Paths and secret IDs are logged like everywhere else (docs/security.md); never in
        a metric label.
        """
        failed: dict[tuple[str, str], list[Hashable]] = {}
        for document, outcome in results.items():
            if (
                isinstance(outcome, StoreError) and outcome.outcome != StoreOutcome.NOT_FOUND
            ):  # StoreOutcome.NOT_FOUND: absent
                failed.setdefault((documents[document].store, outcome.outcome), []).append(document)
        for (store, outcome), failing in sorted(failed.items(), key=lambda item: item[0]):
            policies = self.registry.policies_using(failing)
            log.warning(
                "rotation.version_failed", store=store, outcome=outcome,
                secrets=len(failing), some_secrets=_few(documents[d].name for d in failing),
                policies=len(policies), some_policies=_few(policies),
            )  # fmt: skip

    def _note(self, document: Hashable, ref: StoreRef, outcome: str | StoreError) -> bool:
        """Keep the version seen; whether it is a change that must reach Envoy.

        A failing store is no change. At first sight, the version is compared with what
        this replica's cache holds, which may predate a rotation; with nothing cached,
        this replica has served nothing from it, and the version seen is where changes
        start from. Except after its store failed at first sight: a policy may have been
        denied meanwhile, so any version then is a change, and the policy is translated
        again.
        """
        if isinstance(outcome, StoreError):
            if outcome.outcome != StoreOutcome.NOT_FOUND:
                self._versions.setdefault(document, UNANSWERED)
                return False
            outcome = ABSENT
        known = self._versions.get(document)
        cached = self._resolver.cached_version(ref)
        self._versions[document] = outcome
        if known is None or known == UNANSWERED:
            if cached is not None:
                return cached != outcome
            return known == UNANSWERED and outcome != ABSENT
        return known != outcome

    def _refresh(self, refs: list[StoreRef]) -> None:
        """Fetch changed secrets again: the cache holds the new value, or drops a gone one
        (and forgets a failure it remembered), before Envoy Gateway translates again."""
        failed: dict[tuple[str, str], list[StoreRef]] = {}
        for ref, error in zip(refs, self._all(self._refetch, refs), strict=True):
            if error is not None and error.outcome != StoreOutcome.NOT_FOUND:
                failed.setdefault((ref.store, error.outcome), []).append(ref)
        for (store, outcome), refs_failed in sorted(failed.items()):
            log.warning(
                "rotation.refresh_failed", store=store, outcome=outcome,
                secrets=len(refs_failed), some_secrets=_few(ref.name for ref in refs_failed),
            )  # fmt: skip

    def _refetch(self, ref: StoreRef) -> StoreError | None:
        try:
            self._resolver.refresh(ref)
        except StoreError as error:
            return error
        return None

    def _all(self, work: Callable[..., T], *columns: Sequence[Any]) -> list[T]:
        """`work` over the columns on the pool, in order; `_Stopped` if stopped meanwhile."""
        self._stopping()
        try:
            futures: list[Future[T]] = [
                self._pool.submit(work, *args) for args in zip(*columns, strict=True)
            ]
            return [future.result() for future in futures]
        except (CancelledError, RuntimeError) as error:  # the pool shut down by `stop`
            if self._stop.is_set():
                raise _Stopped from error
            raise

    def _stopping(self) -> None:
        if self._stop.is_set():
            raise _Stopped

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
        """Write each pending policy's revision; one refused patch does not stop the others.

        One line for the policies patched, and one per kind of failure.
        """
        refused: dict[tuple[Any, ...], list[PolicyRef]] = {}
        for policy in sorted(self._pending):
            watched = self.registry.get(policy)
            if watched is None or self._stop.is_set():
                continue
            try:
                patched = self._policies.ensure_revision(watched, self.revision(policy))
            except Exception as error:  # kept pending: tried again at the next poll
                report.failed.append(policy)
                refused.setdefault(tuple(_problem(error).items()), []).append(policy)
                continue
            self._pending.discard(policy)
            if patched:
                report.patched.append(policy)
                self._tell_rotated(watched)
        if report.patched:
            log.info(
                "rotation.patched", policies=len(report.patched), some_policies=_few(report.patched)
            )
        for problem, policies in refused.items():
            log.warning(
                "rotation.patch_failed", policies=len(policies), some_policies=_few(policies),
                **dict(problem),
            )  # fmt: skip

    def _tell_rotated(self, watched: WatchedPolicy) -> None:
        version = self._versions.get(watched.store.document)
        if not self._observers or version is None:
            return
        self._observers.rotated(
            PolicyIdentity(watched.ref.namespace, watched.ref.name, watched.uid),
            Source(watched.store.store, watched.store.name, version),
        )


def _version_in(
    store: SharedVersions, answer: Mapping[str, Any], ref: StoreRef
) -> str | StoreError:
    try:
        return store.version_in(answer, ref)
    except StoreError as error:
        return error


def _few(items: Iterable[object]) -> str:
    """The first NAMED of `items` (sorted), then how many more: a bounded log value."""
    names = sorted(str(item) for item in items)
    shown = ",".join(names[:NAMED])
    return shown if len(names) <= NAMED else f"{shown},...(+{len(names) - NAMED} more)"


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
