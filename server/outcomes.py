"""What the hook decided, as values for the observers that tell people about it.

The hook hands each freshly compiled answer to an `Observer` (Kubernetes Events on the
policies, server/events.py; the audit trail, server/audit.py) and goes on at once: an
observer queues what it gets and does its work on a thread of its own, so nothing it does
(a slow API server, a full disk) can delay or fail a hook call. Nothing here carries a
password or a hash: user names, policy names, store paths and versions only.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Counter

from compiler.errors import PolicyError
from server.logs import get_logger

QUEUE_SIZE = 10_000  # outcomes an observer holds before it drops (and counts) the next ones
DROP_LOG_INTERVAL = 60.0  # seconds between two lines about drops of one observer
CLOSE_TIMEOUT = 5.0  # an observer's own bound on close() when none is given

DROPPED = Counter(
    "extension_server_observer_dropped",
    "Outcomes, Events or audit lines an observer dropped, by observer and why.",
    ["observer", "why"],
)
log = get_logger("server.outcomes")


@dataclass(frozen=True)
class PolicyIdentity:
    namespace: str
    name: str
    uid: str | None  # metadata.uid as Envoy Gateway sent it (None if absent)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Source:
    store: str  # "vault" or "aws"
    secret: str  # the Vault path or the AWS secret id, as the policy names it
    version: str  # the store's version (KV v2 number, AWS VersionId, or a keyed digest for KV v1)


@dataclass(frozen=True)
class Admission:
    """Who one policy admits on one filter chain of one listener."""

    listener: str  # the Envoy listener's name
    # "<namespace>/<name>" of the Gateway owning the chain, when its name says so
    gateway: str | None
    section: str | None  # the Gateway listener (sectionName), when the chain name says so
    policy: PolicyIdentity
    users: frozenset[str]  # user names (never passwords or hashes)
    source: Source | None  # None: spec.password


@dataclass(frozen=True)
class Rejection:
    policy: PolicyIdentity
    # PolicyError.reason: malformed, no_target, invalid_username, ... (compiler/errors.py)
    reason: str
    field: str
    message: str  # str(PolicyError): "policy ns/name: field: problem; fix" (never a secret)
    whole_policy: bool  # True: the policy's users are all denied; False: one entry left out
    # Added: for reason "unresolved", what the store answered (backends/stores.py's outcome
    # words: not_found, forbidden, unavailable, timeout, invalid, not_configured, error), so
    # that an Event can say "SecretNotFound" rather than "StoreUnavailable". None: not known.
    outcome: str | None = None

    @classmethod
    def of(
        cls,
        error: PolicyError,
        *,
        uid: str | None,
        whole_policy: bool,
        outcome: str | None = None,
    ) -> Rejection:
        """The rejection a PolicyError makes (its message is already secret-free)."""
        policy = PolicyIdentity(error.policy.namespace, error.policy.name, uid)
        return cls(policy, error.reason, error.field, str(error), whole_policy, outcome)


@dataclass(frozen=True)
class ListenerOutcome:
    """What one fresh answer (not one reused from memory) decided for one listener."""

    listener: str
    admissions: tuple[Admission, ...]
    rejections: tuple[Rejection, ...]


class Observer(Protocol):
    def observe(self, outcome: ListenerOutcome) -> None:
        """Returns at once, never raises."""

    def rotated(self, policy: PolicyIdentity, source: Source) -> None:
        """A new store version reached this policy."""

    def close(self) -> None:
        """Flush what can be flushed within a bound, stop."""


class Observers:
    """Several observers as one: what the hook calls. Each gets every outcome; one that
    fails (a bug) is skipped for that outcome, never the call."""

    def __init__(self, observers: Iterable[Observer] = ()) -> None:
        self.observers = tuple(observers)

    def __bool__(self) -> bool:
        return bool(self.observers)

    def start(self) -> None:
        for observer in self.observers:
            start = getattr(observer, "start", None)
            if start is not None:
                start()

    def observe(self, outcome: ListenerOutcome) -> None:
        for observer in self.observers:
            try:
                observer.observe(outcome)
            except Exception:  # noqa: S112 (an observer's bug must not fail the hook call)
                continue

    def rotated(self, policy: PolicyIdentity, source: Source) -> None:
        for observer in self.observers:
            try:
                observer.rotated(policy, source)
            except Exception:  # noqa: S112 (as observe)
                continue

    def close(self, timeout: float | None = None) -> None:
        """Close every observer, side by side, within `timeout` seconds in all (None: each
        within its own bound)."""
        threads = [
            threading.Thread(target=_closer(observer, timeout), name="observer-close", daemon=True)
            for observer in self.observers
        ]
        for thread in threads:
            thread.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))


def _closer(observer: Observer, timeout: float | None) -> Callable[[], None]:
    """`close`, with the bound when the observer takes one."""
    if isinstance(observer, QueuedObserver):
        return lambda: observer.close(timeout)
    return observer.close


class QueuedObserver:
    """An observer that queues what it gets and handles it on a thread of its own.

    `observe` and `rotated` only put the item in a bounded queue: a full queue drops the
    item, counts it (`extension_server_observer_dropped_total{why="queue_full"}`) and says
    so in at most one log line a minute. A dropped outcome delays news, it does not lose
    it: the next outcome of the same listener is compared with the last one handled.
    Subclasses give `name`, `handle` (one item, on the thread) and may add `finish` (what
    `close` does after the queue is drained, within the bound).
    """

    name = "observer"

    def __init__(self, queue_size: int = QUEUE_SIZE) -> None:
        self._queue: queue.Queue[object] = queue.Queue(queue_size)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._drops = DropTally(self.name)

    def start(self) -> None:
        if self._thread.ident is None:
            self._thread.start()

    def observe(self, outcome: ListenerOutcome) -> None:
        self._offer(outcome)

    def rotated(self, policy: PolicyIdentity, source: Source) -> None:
        self._offer((policy, source))

    def close(self, timeout: float | None = None) -> None:
        """Handle what is queued, then `finish`, all within `timeout` (CLOSE_TIMEOUT)."""
        deadline = time.monotonic() + (CLOSE_TIMEOUT if timeout is None else timeout)
        self._stopping.set()
        if self._thread.ident is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._queue.qsize():  # never started, or out of time: not handled
            self.dropped("closing", self._queue.qsize())
        self.finish(deadline)
        self._drops.flush()

    def settled(self, timeout: float) -> bool:
        """Whether every item queued so far was handled within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def handle(self, item: object) -> None:
        raise NotImplementedError

    def finish(self, deadline: float) -> None:
        """What close() does once the queue is handled; `deadline` is time.monotonic()'s."""

    def dropped(self, why: str, number: int = 1) -> None:
        self._drops.add(why, number)

    def _offer(self, item: object) -> None:
        if self._stopping.is_set():
            self._drops.add("closing")
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._drops.add("queue_full")

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._stopping.is_set():
                    return
                self._drops.tick()
                continue
            try:
                self.handle(item)
            except Exception:  # a bug: say so, keep handling the next items
                log.exception("observer.failed", observer=self.name)
            finally:
                self._queue.task_done()


class DropTally:
    """Counts drops in the metric at once, and logs them at most once per interval."""

    def __init__(self, observer: str, interval: float = DROP_LOG_INTERVAL) -> None:
        self._observer = observer
        self._interval = interval
        self._lock = threading.Lock()
        self._unlogged: dict[str, int] = {}
        self._logged_at = -interval

    def add(self, why: str, number: int = 1) -> None:
        DROPPED.labels(self._observer, why).inc(number)
        with self._lock:
            self._unlogged[why] = self._unlogged.get(why, 0) + number
        self.tick()

    def tick(self) -> None:
        """Log what was dropped since the last line, if the interval has passed."""
        with self._lock:
            if not self._unlogged or time.monotonic() - self._logged_at < self._interval:
                return
            self._logged_at = time.monotonic()
            unlogged, self._unlogged = self._unlogged, {}
        self._log(unlogged)

    def flush(self) -> None:
        with self._lock:
            unlogged, self._unlogged = self._unlogged, {}
        if unlogged:
            self._log(unlogged)

    def _log(self, unlogged: dict[str, int]) -> None:
        log.warning(
            "observer.dropped",
            observer=self._observer,
            dropped=sum(unlogged.values()),
            why=",".join(f"{why}={n}" for why, n in sorted(unlogged.items())),
        )
