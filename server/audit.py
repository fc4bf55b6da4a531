"""The audit trail: one JSON line per change of who is admitted where, for a SIEM.

Each line names the place (the Envoy listener, and the Gateway and its listener when the
filter chain's name says so), the policy, the user names added and removed, how many it
admits now, the store, secret and version they come from, the replica and the time. A
removal carries the policy's rejection when the same outcome had one (why the users
left). Never a password or a hash: the policy's own message is the only free text, and
it never carries one.

Kinds of line (`event`): `access.snapshot` is a listener's baseline, the first outcome
the server sees for it after it starts (a restart is not a grant: a SIEM rebuilds the
state from the last snapshot and the changes after it); `access.granted`,
`access.revoked` and `access.changed` (both at once, or the same users from another
secret); `access.rotated` (the same users from a new version of the same secret, seen
when the hook compiles it). A change with more than MAX_NAMES user names is split into
lines of at most that many, marked `part` and `parts`.

Destinations (`--audit-log`): `stdout`, where the server's own log (stderr) never goes,
each line carrying `"logger": "audit"`; or a file, opened for appending, created
owner-only (0600), and reopened when it was moved away or deleted (logrotate's default
`create` mode). As every write appends (O_APPEND), logrotate's `copytruncate` is safe too:
after the truncation the next line starts the file again, with no gap of zeros.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import Counter

from server.changes import AccessChange, AccessLedger
from server.logs import get_logger
from server.outcomes import QUEUE_SIZE, ListenerOutcome, QueuedObserver, Rejection, Source

LOGGER = "audit"  # the `logger` of every line: what a log shipper selects on
STDOUT, OFF = "stdout", "off"
MAX_NAMES = 1000  # user names in one line (added and removed together)

AUDIT_LINES = Counter(
    "extension_server_audit_lines", "Audit lines written, by kind of change.", ["change"]
)
log = get_logger("server.audit")


@dataclass(frozen=True)
class AuditSettings:
    # "stdout", "off", or a file path. off here; the CLI's default is stdout.
    destination: str = OFF


class Sink(Protocol):
    def write(self, text: str) -> None: ...

    def close(self) -> None: ...


class StdoutSink:
    """Standard output, which carries nothing else: the server logs to stderr."""

    def write(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def close(self) -> None:
        sys.stdout.flush()


class AuditFile:
    """A file appended to, created owner-only, reopened when rotated away.

    Raises OSError when it cannot be opened (the server does not start then). It is opened
    for that check and closed again: it is held open from the first line on.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        os.close(self._open())
        self._fd = -1

    def write(self, text: str) -> None:
        data = text.encode()
        with self._lock:
            self._reopen_if_moved()
            while data:
                written = os.write(self._fd, data)
                data = data[written:]

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        return os.open(self.path, flags, 0o600)

    def _reopen_if_moved(self) -> None:
        """logrotate moved (or someone deleted) the file: write a new one at the path."""
        try:
            at_path = os.stat(self.path)
        except FileNotFoundError:
            at_path = None
        if self._fd >= 0:
            held = os.fstat(self._fd)
            if at_path is not None and (at_path.st_dev, at_path.st_ino) == (
                held.st_dev,
                held.st_ino,
            ):
                return
            os.close(self._fd)
        self._fd = self._open()


def open_sink(destination: str) -> Sink | None:
    """The sink for `--audit-log` (None for off). Raises OSError for a file that cannot be
    opened."""
    if destination == OFF:
        return None
    if destination == STDOUT:
        return StdoutSink()
    return AuditFile(destination)


def audit_lines(change: AccessChange, at: datetime, server: str) -> list[str]:
    """The JSON lines of one change (several when it names more than MAX_NAMES users)."""
    place, policy = change.place, change.policy
    head: dict[str, Any] = {
        "ts": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "level": "info",
        "logger": LOGGER,
        "event": f"access.{change.change}",
        "server": server,
        "listener": place.listener,
        "gateway": place.gateway or None,
        "section": place.section or None,
        "policy": f"{policy.namespace}/{policy.name}",
        "policy_uid": policy.uid,
        "users": len(change.users),
    }
    tail: dict[str, Any] = {
        "source": _source(change.source),
        "previous_source": _source(change.previous),
        "cause": _cause(change.cause),
    }
    names = [("added", name) for name in change.added] + [
        ("removed", name) for name in change.removed
    ]
    chunks = [names[i : i + MAX_NAMES] for i in range(0, len(names), MAX_NAMES)] or [[]]
    lines = []
    for number, chunk in enumerate(chunks, 1):
        line = {
            **head,
            "added": [name for kind, name in chunk if kind == "added"],
            "removed": [name for kind, name in chunk if kind == "removed"],
            **tail,
        }
        if len(chunks) > 1:
            line["part"], line["parts"] = number, len(chunks)
        lines.append(json.dumps(line, separators=(", ", ": ")))
    return lines


def _source(source: Source | None) -> dict[str, str] | None:
    if source is None:
        return None
    return {"store": source.store, "secret": source.secret, "version": source.version}


def _cause(rejection: Rejection | None) -> dict[str, str] | None:
    if rejection is None:
        return None
    return {"reason": rejection.reason, "field": rejection.field, "message": rejection.message}


class AuditTrail(QueuedObserver):
    """The Observer that writes the audit trail (see the module). `rotated` is not needed:
    a rotation is written when the hook compiles the new version (`access.rotated`)."""

    name = "audit"

    def __init__(self, sink: Sink, *, queue_size: int = QUEUE_SIZE) -> None:
        super().__init__(queue_size)
        self.sink = sink
        self._ledger = AccessLedger()
        self._server = socket.gethostname()

    def start(self) -> None:
        if self._thread.ident is None:
            where = self.sink.path if isinstance(self.sink, AuditFile) else STDOUT
            log.info("audit.started", destination=where)
        super().start()

    def handle(self, item: object) -> None:
        if not isinstance(item, ListenerOutcome):
            return
        changes = self._ledger.apply(item)
        if not changes:
            return
        at = datetime.now(UTC)
        lines = [(c.change, line) for c in changes for line in audit_lines(c, at, self._server)]
        try:
            self.sink.write("".join(line + "\n" for _, line in lines))
        except OSError as error:
            self.dropped("write_failed" if error.errno != errno.ENOSPC else "disk_full", len(lines))
            return
        for change, _ in lines:
            AUDIT_LINES.labels(change).inc()

    def finish(self, deadline: float) -> None:
        with contextlib.suppress(OSError):
            self.sink.close()


def build_trail(settings: AuditSettings) -> AuditTrail | None:
    """The audit trail for `--audit-log`; OSError when its file cannot be opened."""
    sink = open_sink(settings.destination)
    return AuditTrail(sink) if sink is not None else None
