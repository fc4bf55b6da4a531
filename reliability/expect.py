"""When a store's users may, must or must not be in an answer: the documented semantics.

docs/backends.md ("Cache and failures") and docs/security.md ("In short") promise:

- a fresh value (younger than the TTL) is served as it is;
- while a store fails (down, sealed, throttling, slow past --backend-timeout, 5xx), the
  last good value keeps serving until TTL + max-stale after it was fetched; after that
  the policy's users are left out, until the store answers again;
- a definite answer (the secret is gone, access is denied) leaves the users out as soon
  as the cached value is no longer fresh: no stale value covers a revocation;
- a failure is remembered for min(5 s, TTL) (backends/cache.py), so users may stay
  out for that long after the store recovers.

The soak notes when it broke and mended each store (or one secret): `Timeline`. For a
call sent at `s` and answered at `r`, `allowed` turns those spans into two booleans:
may the policy's users be present, may they be absent. Every bound is widened by the
soak's own timing slack (`margin`) in the direction that never blames the server for
the soak's imprecision, and by one backend timeout where a request in flight at the
moment of a change could still end either way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

ERROR_MEMORY = 5.0  # backends/cache.py ERROR_TTL: how long a failure is remembered (cap)
MERGE_GAP = 0.5  # seconds: a fault that starts this soon after the last one continues it


@dataclass(frozen=True)
class Settings:
    """The server's cache settings and the soak's own timing slack, in seconds."""

    ttl: float
    max_stale: float
    timeout: float
    margin: float

    @property
    def recovery(self) -> float:
        """After a store recovers: a remembered failure, a request in flight, slack."""
        return min(ERROR_MEMORY, self.ttl) + self.timeout + self.margin


@dataclass
class Span:
    """One stretch of failure of a store (an outage) or of one secret (definite)."""

    start: float
    end: float | None
    definite: bool
    lenient: bool = False  # the warm-up: anything goes, except intruders


@dataclass(frozen=True)
class Allowed:
    present: bool
    absent: bool


class Timeline:
    """Thread-safe record of fault spans, keyed by store ("vault") or secret ("vault:<path>")."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._spans: dict[str, list[Span]] = {}
        self._lock = threading.Lock()

    def begin(self, key: str, *, definite: bool = False, lenient: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            spans = self._spans.setdefault(key, [])
            last = spans[-1] if spans else None
            if (
                last is not None
                and last.end is not None
                and now - last.end < MERGE_GAP
                and (last.definite, last.lenient) == (definite, lenient)
            ):
                last.end = None  # back to back: one long failure
                return
            spans.append(Span(now, None, definite, lenient))

    def end(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            for span in self._spans.get(key, []):
                if span.end is None:
                    span.end = now

    def allowed(self, keys: Iterable[str], sent: float, answered: float) -> Allowed:
        """What a policy reading the stores/secrets `keys` may look like in this answer."""
        present, absent = True, False
        recovery = self.settings.recovery
        with self._lock:
            spans = [span for key in keys for span in self._spans.get(key, [])]
        in_play = [
            span
            for span in spans
            if span.start <= answered and (span.end is None or span.end + recovery >= sent)
        ]
        for span in in_play:
            verdict = self._verdict(span, _healthy_before(span, spans), sent, answered)
            present = present and verdict.present
            absent = absent or verdict.absent
        return Allowed(present, absent)

    def _verdict(self, span: Span, healthy: float, sent: float, answered: float) -> Allowed:
        s = self.settings
        ongoing = span.end is None or span.end >= answered
        if span.lenient:
            return Allowed(True, True)
        if span.definite:
            # The last fresh value may serve out its TTL, then the users are out.
            gone = span.start + s.ttl + s.timeout + s.margin <= sent
            return Allowed(not (ongoing and gone), True)
        # An outage: the last good value is at most a TTL (and a fetch) older than the
        # start, if the store was healthy long enough before to have fetched one.
        fetched = healthy >= s.recovery
        may_run_out = not fetched or answered >= span.start + s.max_stale - s.margin
        ran_out = span.start + s.ttl + s.max_stale + s.timeout + s.margin <= sent
        return Allowed(not (ongoing and ran_out), may_run_out)


def _healthy_before(span: Span, spans: list[Span]) -> float:
    """Seconds every key of the policy had been healthy when `span` began (inf: always)."""
    ends = [
        min(span.start, float("inf") if other.end is None else other.end)
        for other in spans
        if other is not span and other.start < span.start
    ]
    return span.start - max(ends) if ends else float("inf")
