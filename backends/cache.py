"""The secret cache: TTL, stale-if-error, single flight. Never a reason to let anyone in.

Timeline of one secret (TTL 60 s, max-stale 15 min by default):

    fetched ---- fresh: served from memory ---- TTL ---- refreshed on the next use
                                                  |
                           refresh fails (store down, sealed, slow): the last good
                           value keeps serving, counted as stale, until TTL +
                           max-stale; after that, or if no value was ever fetched,
                           the store's error denies. A definite answer (the secret
                           is gone, or access was revoked) denies at once.

Envoy Gateway calls the hook for every listener on every translation, so many calls
want the same secret at once: one backend request serves them all (single flight).
A failed request is remembered for a few seconds, so a store that is down is not asked
again by every one of a hundred listeners.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from cachetools import TTLCache

from backends import metrics
from backends.stores import StoreError, StoreOutcome

ERROR_TTL = 5.0  # how long a failed request is remembered
DEFINITE = frozenset(
    {StoreOutcome.NOT_FOUND, StoreOutcome.FORBIDDEN, StoreOutcome.INVALID}
)  # answers, not outages: no stale serve
FETCHES_PER_STORE = 16  # requests one store may have in flight at once


@dataclass(frozen=True)
class _Entry:
    value: Any
    fetched_at: float
    invalidated: bool = False  # a newer version exists: fetch again, but it still covers outages


@dataclass(frozen=True)
class Lookup:
    """A `get` begun by `SecretCache.start`: answered already, failed, or a fetch to wait on."""

    store: str
    entry: _Entry | None
    answered: bool = False  # entry.value is the answer
    error: StoreError | None = None  # a failure remembered from a moment ago
    future: Future[Any] | None = None


class SecretCache:
    """Thread-safe; `get` fetches at most once per key at a time."""

    def __init__(
        self,
        ttl: float,
        max_stale: float,
        *,
        wait: float,
        maxsize: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_stale = max_stale
        self._wait = wait
        self._clock = clock
        self._lock = threading.Lock()
        # Values live until even a stale serve is over; freshness is checked on read.
        self._values: TTLCache[Hashable, _Entry] = TTLCache(
            maxsize, ttl + max_stale if ttl + max_stale > 0 else 1e-9, timer=clock
        )
        self._errors: TTLCache[Hashable, StoreError] = TTLCache(
            maxsize, min(ERROR_TTL, ttl) or 1e-9, timer=clock
        )
        self._in_flight: dict[Hashable, Future[Any]] = {}
        self._fetchers: dict[str, ThreadPoolExecutor] = {}

    def get(self, key: Hashable, store: str, fetch: Callable[[], Any]) -> Any:
        """The secret for `key`: fresh, fetched (once for all callers), or stale on error."""
        return self.finish(self.start(key, store, fetch), self._wait)

    def start(self, key: Hashable, store: str, fetch: Callable[[], Any]) -> Lookup:
        """Begin a `get` without waiting: a hit is answered, a miss starts (or joins) a fetch.

        The fetch runs on the store's own threads, so a caller waits for it only as long as
        it chooses (`finish`), and a store that hangs holds up only its own lookups.
        """
        with self._lock:
            entry = self._values.get(key)
            if (
                entry is not None
                and not entry.invalidated
                and self._clock() - entry.fetched_at < self.ttl
            ):
                metrics.CACHE_HITS.labels(store).inc()
                return Lookup(store, entry, answered=True)
            metrics.CACHE_MISSES.labels(store).inc()
            error = self._errors.get(key)
            future = self._in_flight.get(key)
            leader = error is None and future is None
            if leader:
                future = self._in_flight[key] = Future()
        if error is not None:
            return Lookup(store, entry, error=error)
        assert future is not None
        if leader:
            self._threads(store).submit(self._fetch, key, store, fetch, future)
        elif self._serves_meanwhile(entry):
            return Lookup(store, entry, answered=True)
        return Lookup(store, entry, future=future)

    def finish(self, lookup: Lookup, timeout: float) -> Any:
        """The value `start` began to look up, waiting at most `timeout` seconds for a fetch."""
        if lookup.answered:
            assert lookup.entry is not None
            return lookup.entry.value
        store, entry = lookup.store, lookup.entry
        if lookup.error is not None:
            return self._stale_or_raise(entry, store, lookup.error)
        assert lookup.future is not None
        try:
            # The failure itself, not raised: one failure reaches many callers, and raising
            # the same object in each would chain every caller's frames (whole calls) to it
            # for as long as it is remembered.
            failure = lookup.future.exception(timeout=max(timeout, 0.0))
        except TimeoutError:
            failure = StoreError(
                store,
                StoreOutcome.TIMEOUT,
                f"{store} did not answer before the deadline (--backend-timeout)",
            )
        if failure is None:
            return lookup.future.result()
        if isinstance(failure, StoreError):
            return self._stale_or_raise(entry, store, failure)
        raise RuntimeError(f"the {store} store failed unexpectedly") from failure  # a bug

    @property
    def wait(self) -> float:
        """How long a caller waits for a fetch before the stale value or an error."""
        return self._wait

    def close(self) -> None:
        """Stop the fetch threads: queued fetches are dropped, running ones finish."""
        with self._lock:
            fetchers, self._fetchers = list(self._fetchers.values()), {}
        for threads in fetchers:
            threads.shutdown(wait=True, cancel_futures=True)

    def _threads(self, store: str) -> ThreadPoolExecutor:
        """The fetch threads of one store: a store that hangs never takes another's."""
        with self._lock:
            threads = self._fetchers.get(store)
            if threads is None:
                threads = self._fetchers[store] = ThreadPoolExecutor(
                    FETCHES_PER_STORE, thread_name_prefix=f"fetch-{store}"
                )
            return threads

    def _serves_meanwhile(self, entry: _Entry | None) -> bool:
        """Whether a caller that finds a refresh in flight may take the last value now.

        Only the caller that asks the store waits for it: with a slow store, every other
        call would otherwise wait too, and queue the calls behind it. Not after a newer
        version was seen (invalidated): the re-translation must get the new value.
        """
        return (
            entry is not None
            and not entry.invalidated
            and self._clock() - entry.fetched_at < self.ttl + self.max_stale
        )

    def invalidate(self, key: Hashable) -> None:
        """A newer version exists: the next `get` fetches; the old value still covers outages."""
        with self._lock:
            entry = self._values.get(key)
            if entry is not None:
                self._values[key] = _Entry(entry.value, entry.fetched_at, invalidated=True)
            self._errors.pop(key, None)

    def peek(self, key: Hashable) -> Any | None:
        """The last good value, fresh or not, without fetching; None if there is none."""
        with self._lock:
            entry = self._values.get(key)
        return None if entry is None else entry.value

    def _fetch(
        self, key: Hashable, store: str, fetch: Callable[[], Any], future: Future[Any]
    ) -> None:
        try:
            value = fetch()
        except Exception as error:
            failure = _as_store_error(store, error)
            metrics.BACKEND_REQUESTS.labels(store, failure.outcome).inc()
            with self._lock:
                self._errors[key] = failure.with_traceback(None)
                if failure.outcome in DEFINITE:
                    # A revocation: the last value must not serve anyone again, not even
                    # a caller that finds the next refresh in flight.
                    self._values.pop(key, None)
                del self._in_flight[key]
            future.set_exception(failure)
        except BaseException as failure:  # interpreter exit: release the waiters, re-raise
            with self._lock:
                del self._in_flight[key]
            future.set_exception(failure)
            raise
        else:
            metrics.BACKEND_REQUESTS.labels(store, StoreOutcome.OK).inc()
            with self._lock:
                self._values[key] = _Entry(value, self._clock())
                self._errors.pop(key, None)
                del self._in_flight[key]
            future.set_result(value)

    def _stale_or_raise(self, entry: _Entry | None, store: str, error: StoreError) -> Any:
        """The last good value while the store is failing; never past a definite answer.

        A secret that is gone, or that the server may no longer read, is a revocation,
        not an outage: it takes effect at once.
        """
        if entry is None or error.outcome in DEFINITE:
            raise _fresh(error)
        if self._clock() - entry.fetched_at < self.ttl + self.max_stale:
            metrics.STALE_SERVES.labels(store).inc()
            return entry.value
        raise _fresh(error)


def _as_store_error(store: str, error: Exception) -> StoreError:
    """Any failure of a fetch as a store answer, remembered and denied like the others.

    A store's own failures are StoreErrors already. Anything else comes from what the
    store sent (a value nested too deeply for the JSON reader, a field of an unexpected
    type) or a bug: either way it is this secret's problem, not the call's.
    """
    if isinstance(error, StoreError):
        return error
    return StoreError(
        store,
        StoreOutcome.INVALID,
        f"the {store} store's answer could not be read ({type(error).__name__})",
    )


def _fresh(error: StoreError) -> StoreError:
    """A new exception with the same meaning, for one caller.

    One failure is remembered (ERROR_TTL) and given to many calls. Raising the very same
    object again and again would grow its traceback by every caller's frames, and keep
    those frames (whole hook calls) alive for as long as the failure is remembered.
    """
    return StoreError(error.store, error.outcome, str(error))
