"""Kubernetes Events on each policy: what became of it, where its owner looks.

Envoy Gateway overwrites a policy's `status`, and a team that owns a policy usually cannot
read this server's log. So the server writes Events about the policy itself, in its
namespace, which `kubectl describe listenercontextexample NAME` and `kubectl get events`
show: a Warning per rejection (the reason names the failure family, the note is the
message `compile` prints: field, problem, fix), a Normal one when the users a policy
admits on a Gateway change, and one when a rotation brings a new version of its secret.

The API is events.k8s.io/v1, the one client-go's current recorder (tools/events) writes:
its `series` (count, lastObservedTime) is how Kubernetes folds repeats, its validation
refuses what core/v1 would store silently (a note over 1 KiB, a missing reason), and
`reportingController`/`reportingInstance` name the server and the replica. kubectl reads
these Events through core/v1 too (`kubectl get events`, `describe`: "x12 over 5m").

Folding, as client-go does it, and a little further:
- The same Event (same policy, type, reason and note) is one object: its name is the
  policy's name and a digest of that content, so repeats, other replicas and a restarted
  server all add to it instead of making new ones.
- The first occurrence is written at once (create). Repeats are counted in memory and
  written at most once per `--kubernetes-events-interval` (5 min), as a conditional merge
  patch of `series` (get first when the resourceVersion is not known; a conflict with
  another replica is read again and retried once). An Event that expired meanwhile (the API
  server keeps them an hour) is created again.
- `observe` only queues (server/outcomes.py's QueuedObserver): one thread folds, another
  writes. A slow or failing API server holds up the writer only; repeats keep folding.
  Distinct Events held are bounded (MAX_EVENTS, least recently seen dropped first), so is
  the queue; every drop is counted in a metric and logged at most once a minute.

Nothing here holds a password, a hash or a token: notes are PolicyError messages (which
never carry one), user names, Gateway and secret names and store versions.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from prometheus_client import Counter

from compiler.model import POLICY_GROUP, POLICY_KIND, POLICY_VERSION
from server.changes import CHANGED, GRANTED, REVOKED, ROTATED, SNAPSHOT, AccessChange, AccessLedger
from server.logs import get_logger
from server.outcomes import (
    QUEUE_SIZE,
    ListenerOutcome,
    PolicyIdentity,
    QueuedObserver,
    Rejection,
    Source,
)

if TYPE_CHECKING:
    from lightkube import Client

NORMAL, WARNING = "Normal", "Warning"
REPORTING_CONTROLLER = "extension-server"
MODES = ("auto", "on", "off")
DEFAULT_INTERVAL = 300.0  # seconds between two writes of the same Event
RETRY_DELAY = 10.0  # after a failed write (client-go waits 10 s too)
MAX_EVENTS = 4096  # distinct Events held (client-go's cache holds as many)
FORGET_AFTER = 3600.0  # an Event not seen for this long is forgotten (the API server's TTL)
REQUEST_TIMEOUT = 5.0  # one request to the API server
# events.k8s.io/v1 validation (pkg/apis/core/validation/events.go), in bytes
NOTE_LIMIT = 1024
REASON_LIMIT = ACTION_LIMIT = INSTANCE_LIMIT = 128
NAME_LIMIT = 253
DIGEST_LENGTH = 16

# Warning reasons: the PolicyError reason word in CamelCase, made a noun where the word alone
# would not read as one. "unresolved" is split by what the store answered (Rejection.outcome).
WARNING_REASONS = {
    "malformed": "MalformedPolicy",
    "no_target": "NoTarget",
    "invalid_username": "InvalidUsername",
    "invalid_password": "InvalidPassword",
    "invalid_header": "InvalidHeader",
    "conflict": "Conflict",
    "unsupported_hash": "UnsupportedHash",
    "plaintext_forbidden": "PlaintextForbidden",
    "tenancy": "TenancyViolation",
    "too_large": "TooLarge",
    "internal": "InternalError",
}
UNRESOLVED_REASONS = {
    "not_found": "SecretNotFound",
    "forbidden": "SecretAccessDenied",
    "invalid": "InvalidStoredValue",
    "not_configured": "StoreNotConfigured",
    "unavailable": "StoreUnavailable",
    "timeout": "StoreUnavailable",
    "error": "StoreUnavailable",
}
UNRESOLVED_UNKNOWN = "CredentialsUnresolved"
USERS_APPLIED, USERS_REMOVED, CREDENTIALS_ROTATED = (
    "UsersApplied",
    "UsersRemoved",
    "CredentialsRotated",
)
# events.k8s.io's `action`: what was done regarding the policy
COMPILE, ADMIT, ROTATE = "Compile", "Admit", "Rotate"

EVENT_WRITES = Counter(
    "extension_server_kubernetes_event_writes",
    "Event writes to the Kubernetes API: created, updated (series), failed (retried), "
    "refused (dropped).",
    ["result"],
)
log = get_logger("server.events")


# -- what an Event says ---------------------------------------------------------------------


@dataclass(frozen=True)
class EventContent:
    """One Event's content; equal content is the same Event."""

    policy: PolicyIdentity
    type: str
    reason: str
    action: str
    note: str

    @property
    def name(self) -> str:
        """`<policy name>.<digest of the content>`: the same on every replica."""
        parts = (self.policy.namespace, self.policy.name, self.policy.uid or "", self.type,
                 self.reason, self.note)  # fmt: skip
        digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:DIGEST_LENGTH]
        prefix = self.policy.name[: NAME_LIMIT - DIGEST_LENGTH - 1].rstrip(".-")
        return f"{prefix}.{digest}"


def warning_reason(rejection: Rejection) -> str:
    if rejection.reason == "unresolved":
        return UNRESOLVED_REASONS.get(rejection.outcome or "", UNRESOLVED_UNKNOWN)
    known = WARNING_REASONS.get(rejection.reason)
    return known or "".join(word.capitalize() for word in rejection.reason.split("_"))


def rejection_event(rejection: Rejection) -> EventContent:
    return EventContent(
        rejection.policy,
        WARNING,
        fit(warning_reason(rejection), REASON_LIMIT),
        COMPILE,
        fit(rejection.message, NOTE_LIMIT),
    )


def rotation_event(policy: PolicyIdentity, source: Source) -> EventContent:
    note = f"now reads version {source.version} of {source.store} secret {source.secret}"
    return EventContent(policy, NORMAL, CREDENTIALS_ROTATED, ROTATE, fit(note, NOTE_LIMIT))


def change_events(change: AccessChange) -> list[EventContent]:
    """The Normal Events of one change of access (none for a change of nothing)."""
    same_users = not change.added and not change.removed
    if change.change == ROTATED or (change.change == CHANGED and same_users):
        # a new version of the secret, or another secret: the users are the same
        return [rotation_event(change.policy, change.source)] if change.source else []
    found = []
    admits = _admits(len(change.users), str(change.place))
    if change.change in (SNAPSHOT, GRANTED) and len(change.added) == len(change.users):
        # everything it admits is new here (or the server just started): the same note, so
        # a restarted replica adds to the Event it wrote before
        found.append((USERS_APPLIED, f"{admits}: ", change.added))
    elif change.added:
        found.append((USERS_APPLIED, f"{admits}; added {len(change.added)}: ", change.added))
    if change.change in (REVOKED, CHANGED) and change.removed:
        why = f" ({warning_reason(change.cause)})" if change.cause else ""
        text = f"{admits}; removed {len(change.removed)}{why}: "
        found.append((USERS_REMOVED, text, change.removed))
    return [
        EventContent(change.policy, NORMAL, reason, ADMIT, _note(head, names))
        for reason, head, names in found
    ]


def _note(head: str, names: tuple[str, ...]) -> str:
    """`head` and as many names as fit in a note."""
    left = max(0, NOTE_LIMIT - len(head.encode()))
    return fit(head + named(names, left), NOTE_LIMIT)


def _admits(users: int, place: str) -> str:
    if users == 0:
        return f"admits no user on {place}"
    return f"admits {users} user{'s' if users != 1 else ''} on {place}"


def named(names: tuple[str, ...], budget: int) -> str:
    """`a, b, c` within `budget` bytes, the rest counted: `a, b (+1 more)`."""
    shown: list[str] = []
    used = 0
    for index, name in enumerate(names):
        more = f" (+{len(names) - index} more)"
        cost = len(name.encode()) + (2 if shown else 0)
        rest_after = f" (+{len(names) - index - 1} more)" if index + 1 < len(names) else ""
        if used + cost + len(rest_after.encode()) > budget:
            return ", ".join(shown) + more if shown else fit(more.strip(), budget)
        shown.append(name)
        used += cost
    return ", ".join(shown)


def fit(text: str, limit: int) -> str:
    """`text` cut to `limit` UTF-8 bytes (validation counts bytes), marked with `...`."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode(errors="ignore") + "..."


# -- folding --------------------------------------------------------------------------------


@dataclass
class _Entry:
    content: EventContent
    name: str
    first_seen: datetime
    last_seen: datetime
    seen_at: float  # time.monotonic() of the last occurrence
    pending: int = 0  # occurrences not yet written
    next_try: float = 0.0  # time.monotonic(): not written before
    resource_version: str | None = None  # the API server's, from the last write
    server_count: int = 0  # the count the API server holds; 0: not written by this replica
    busy: bool = False  # being written now


@dataclass(frozen=True)
class EventWrite:
    """One write: add `count` occurrences to the Event `name`."""

    content: EventContent
    name: str
    first_seen: datetime
    last_seen: datetime
    count: int
    resource_version: str | None
    server_count: int


@dataclass(frozen=True)
class Stored:
    resource_version: str | None
    count: int  # the series count the API server now holds (1: a singleton)


class EventFolder:
    """Occurrences of each Event, and which are due to be written: thread-safe."""

    def __init__(self, interval: float, max_events: int = MAX_EVENTS, on_drop: Any = None) -> None:
        self.interval = interval
        self._max = max_events
        self._on_drop = on_drop or (lambda why, number: None)
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def record(self, content: EventContent) -> None:
        now, wall = time.monotonic(), datetime.now(UTC)
        name = content.name
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                entry = _Entry(content, name, wall, wall, now, next_try=now)
                self._entries[name] = entry
                self._evict()
            else:
                self._entries.move_to_end(name)
            entry.pending += 1
            entry.last_seen, entry.seen_at = wall, now

    def take_due(self, *, final: bool = False) -> list[EventWrite]:
        """The writes due now (all with occurrences pending, when `final`); each is then
        busy until `done`."""
        now = time.monotonic()
        writes = []
        with self._lock:
            for name in [n for n, e in self._entries.items() if _idle(e, now)]:
                del self._entries[name]
            for entry in self._entries.values():
                if entry.pending and not entry.busy and (final or entry.next_try <= now):
                    entry.busy = True
                    writes.append(
                        EventWrite(entry.content, entry.name, entry.first_seen, entry.last_seen,
                                   entry.pending, entry.resource_version, entry.server_count)
                    )  # fmt: skip
                    entry.pending = 0
        return writes

    def done(
        self, write: EventWrite, stored: Stored | None, *, retry_in: float | None = None
    ) -> None:
        """After a write: `stored` on success; else the occurrences are kept for a retry
        in `retry_in` seconds, or (None) given up."""
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(write.name)
            if entry is None:
                return
            entry.busy = False
            if stored is not None:
                entry.resource_version, entry.server_count = stored.resource_version, stored.count
                entry.next_try = now + self.interval
            elif retry_in is not None:
                entry.pending += write.count
                entry.resource_version = None  # read it again first
                entry.next_try = now + retry_in

    def wait_time(self) -> float | None:
        """Seconds until the next write is due (0: now), None when nothing is pending."""
        now = time.monotonic()
        with self._lock:
            due = [e.next_try for e in self._entries.values() if e.pending and not e.busy]
        return max(0.0, min(due) - now) if due else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _evict(self) -> None:
        while len(self._entries) > self._max:
            name = next((n for n, e in self._entries.items() if not e.busy), None)
            if name is None:
                return
            entry = self._entries.pop(name)
            if entry.pending:
                self._on_drop("cache_full", 1)


def _idle(entry: _Entry, now: float) -> bool:
    return not entry.pending and not entry.busy and now - entry.seen_at > FORGET_AFTER


# -- writing ------------------------------------------------------------------------------


class WriteFailed(Exception):
    """A write that did not happen; `permanent`: the API server refused the Event itself."""

    def __init__(self, problem: str, status: int | None = None, *, permanent: bool = False):
        super().__init__(problem)
        self.status = status
        self.permanent = permanent


class EventWriter:
    """Writes folded Events with lightkube: create, or raise the series count with a
    conditional merge patch (get first when the resourceVersion is not known)."""

    def __init__(self, client: Client, instance: str) -> None:
        self._client = client
        self.instance = fit(instance, INSTANCE_LIMIT)

    def write(self, write: EventWrite) -> Stored:
        from lightkube import ApiError  # noqa: PLC0415 (lightkube only with Events on)

        try:
            if write.resource_version is None and write.server_count == 0:
                try:
                    return self._create(write)
                except ApiError as error:
                    if error.status.code != 409:  # AlreadyExists: another replica, or before
                        raise
            return self._add(write)
        except ApiError as error:
            code = error.status.code
            permanent = code in (400, 404, 415, 422)
            raise WriteFailed(str(error.status.reason), code, permanent=permanent) from None
        except WriteFailed:
            raise
        except Exception as error:  # the transport: unreachable, timeout, TLS
            raise WriteFailed(type(error).__name__) from None

    def _create(self, write: EventWrite, *, again: bool = False) -> Stored:
        """A new Event with the write's occurrences; `again`: one that expired (or was
        deleted) since this replica wrote it, which starts over from the last occurrence."""
        from lightkube.models.core_v1 import ObjectReference  # noqa: PLC0415
        from lightkube.models.events_v1 import EventSeries  # noqa: PLC0415
        from lightkube.models.meta_v1 import ObjectMeta  # noqa: PLC0415
        from lightkube.resources.events_v1 import Event  # noqa: PLC0415

        content, count = write.content, write.count
        policy = content.policy
        event = Event(
            metadata=ObjectMeta(name=write.name, namespace=policy.namespace),
            eventTime=write.last_seen if again else write.first_seen,
            type=content.type,
            reason=content.reason,
            action=content.action,
            note=content.note,
            regarding=ObjectReference(
                apiVersion=f"{POLICY_GROUP}/{POLICY_VERSION}",
                kind=POLICY_KIND,
                namespace=policy.namespace,
                name=policy.name,
                uid=policy.uid,
            ),
            reportingController=REPORTING_CONTROLLER,
            reportingInstance=self.instance,
            series=EventSeries(count=count, lastObservedTime=write.last_seen)
            if count > 1
            else None,
        )
        created = self._client.create(event)
        EVENT_WRITES.labels("created").inc()
        return Stored(_version(created), count)

    def _add(self, write: EventWrite) -> Stored:
        """Raise the count of an Event that exists: optimistic concurrency, one retry."""
        from lightkube import ApiError  # noqa: PLC0415
        from lightkube.resources.events_v1 import Event  # noqa: PLC0415
        from lightkube.types import PatchType  # noqa: PLC0415

        version, held = write.resource_version, write.server_count
        namespace = write.content.policy.namespace
        for _ in range(2):
            if version is None:
                try:
                    current = self._client.get(Event, write.name, namespace=namespace)
                except ApiError as error:
                    if error.status.code == 404:  # expired (or deleted): a new one
                        return self._create(write, again=True)
                    raise
                version = _version(current)
                held = current.series.count if current.series and current.series.count else 1
            count = held + write.count
            patch = {
                "metadata": {"resourceVersion": version},
                "series": {"count": count, "lastObservedTime": _micro(write.last_seen)},
            }
            try:
                patched = self._client.patch(
                    Event, write.name, patch, namespace=namespace, patch_type=PatchType.MERGE
                )
            except ApiError as error:
                if error.status.code == 409:  # another replica wrote it first: read again
                    version = None
                    continue
                if error.status.code == 404:
                    return self._create(write, again=True)
                raise
            EVENT_WRITES.labels("updated").inc()
            return Stored(_version(patched), count)
        raise WriteFailed("Conflict", 409)


def _version(obj: Any) -> str | None:
    metadata = getattr(obj, "metadata", None)
    return getattr(metadata, "resourceVersion", None)


def _micro(moment: datetime) -> str:
    """A MicroTime as the API server writes it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- the observer -------------------------------------------------------------------------


@dataclass(frozen=True)
class EventSettings:
    # "auto": on when Kubernetes can be reached (in a pod, or KUBECONFIG set); "on"; "off".
    # off here; the CLI's default is auto
    mode: str = "off"
    interval: float = DEFAULT_INTERVAL


@dataclass
class _WriteFailures:
    """Failed writes since the last line about them, logged at most once a minute."""

    number: int = 0
    last: WriteFailed | None = None
    logged_at: float = field(default=-60.0)

    def add(self, failure: WriteFailed) -> None:
        self.number += 1
        self.last = failure
        if time.monotonic() - self.logged_at >= 60.0:
            self.flush()

    def flush(self) -> None:
        if self.number and self.last is not None:
            log.warning(
                "events.write_failed",
                failures=self.number,
                error=str(self.last),
                status=self.last.status or "-",
                retried="no" if self.last.permanent else "yes",
            )
            self.number, self.logged_at = 0, time.monotonic()


class EventRecorder(QueuedObserver):
    """The Observer that turns outcomes into folded Kubernetes Events (see the module)."""

    name = "events"

    def __init__(
        self,
        writer: EventWriter,
        interval: float = DEFAULT_INTERVAL,
        *,
        queue_size: int | None = None,
        max_events: int = MAX_EVENTS,
    ) -> None:
        super().__init__(queue_size or QUEUE_SIZE)
        self.writer = writer
        self.folder = EventFolder(interval, max_events, on_drop=self.dropped)
        self._ledger = AccessLedger()
        self._wake = threading.Event()
        self._final = threading.Event()
        self._deadline = float("inf")
        self._failures = _WriteFailures()
        self._writing = threading.Thread(target=self._write_loop, name="events-write", daemon=True)

    def start(self) -> None:
        if self._writing.ident is None:
            log.info(
                "events.started",
                interval_seconds=self.folder.interval,
                instance=self.writer.instance,
            )
            self._writing.start()
        super().start()

    def handle(self, item: object) -> None:
        if isinstance(item, ListenerOutcome):
            for change in self._ledger.apply(item):
                for content in change_events(change):
                    self.folder.record(content)
            for rejection in item.rejections:
                self.folder.record(rejection_event(rejection))
        else:
            policy, source = cast(tuple[PolicyIdentity, Source], item)
            self.folder.record(rotation_event(policy, source))
        self._wake.set()

    def finish(self, deadline: float) -> None:
        """Write what is pending, whatever the interval, until the deadline."""
        self._deadline = deadline
        self._final.set()
        self._wake.set()
        if self._writing.ident is not None:
            self._writing.join(max(0.0, deadline - time.monotonic()))
        self._failures.flush()

    def _write_loop(self) -> None:
        while not self._final.is_set():
            wait = self.folder.wait_time()
            self._wake.wait(1.0 if wait is None else min(wait, 1.0))
            self._wake.clear()
            for write in self.folder.take_due():
                self._write(write)
        writes = self.folder.take_due(final=True)
        for index, write in enumerate(writes):
            if time.monotonic() >= self._deadline:
                self.dropped("closing", len(writes) - index)
                return
            self._write(write)

    def _write(self, write: EventWrite) -> None:
        try:
            stored = self.writer.write(write)
        except WriteFailed as failure:
            EVENT_WRITES.labels("refused" if failure.permanent else "failed").inc()
            if failure.permanent:
                self.folder.done(write, None)
                self.dropped("refused")
            else:
                # An outage is retried soon; missing RBAC (401, 403) once per interval, so
                # that thousands of Events do not knock every 10 s until it is fixed.
                interval = self.folder.interval
                denied = failure.status in (401, 403)
                self.folder.done(
                    write, None, retry_in=interval if denied else min(RETRY_DELAY, interval)
                )
            self._failures.add(failure)
        except Exception:  # a bug: never the writer thread's end
            log.exception("observer.failed", observer=self.name)
            self.folder.done(write, None)
        else:
            self.folder.done(write, stored)


# -- where the API server is ----------------------------------------------------------------


class KubernetesUnreachable(Exception):
    """`--kubernetes-events on`, and no Kubernetes configuration was found."""


def kubernetes_reachable() -> bool:
    """In a pod (the kubelet gives every container KUBERNETES_SERVICE_HOST and _PORT), or
    KUBECONFIG names a configuration: where `auto` turns Events on."""
    in_pod = os.environ.get("KUBERNETES_SERVICE_HOST") and os.environ.get("KUBERNETES_SERVICE_PORT")
    return bool(in_pod or os.environ.get("KUBECONFIG"))


def reporting_instance() -> str:
    """This replica, as client-go names it: the controller and the host (pod) name."""
    return f"{REPORTING_CONTROLLER}-{socket.gethostname()}"


def build_recorder(settings: EventSettings) -> EventRecorder | None:
    """The recorder, when Events are on here and Kubernetes configuration is found.

    Raises KubernetesUnreachable for `on` without a configuration; `auto` then logs
    `events.disabled` and serves without Events.
    """
    if settings.mode == "off" or (settings.mode == "auto" and not kubernetes_reachable()):
        return None
    # Only a server that writes Events pays for the Kubernetes client.
    import httpx2  # noqa: PLC0415
    import lightkube  # noqa: PLC0415

    try:
        client = lightkube.Client(
            field_manager=REPORTING_CONTROLLER, timeout=httpx2.Timeout(REQUEST_TIMEOUT)
        )
    except (lightkube.ConfigError, KeyError, OSError, ValueError) as error:
        problem = f"no Kubernetes configuration ({type(error).__name__}: {error})"
        if settings.mode == "on":
            raise KubernetesUnreachable(
                f"{problem}; run in a pod with a ServiceAccount token, set KUBECONFIG, or "
                "turn Events off"
            ) from None
        log.warning("events.disabled", reason=problem)
        return None
    return EventRecorder(EventWriter(client, reporting_instance()), settings.interval)
