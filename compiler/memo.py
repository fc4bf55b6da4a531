"""Reuse of results across hook calls: the same policies arrive with every listener.

`BoundedMemo` is a dict with a size budget, evicting the oldest entries first: a hit is
one dict lookup, which matters on a path taken for every policy of every hook call.
`IdentityMemo` keys values on the identity of their inputs: the resolver hands out the
very same `Resolved` object while a policy and its stored secret are unchanged, so the
compiler can recognise an unchanged call in constant time whatever the number of users.
It holds its inputs weakly and drops an entry as soon as one of them is gone: a value
built from inputs nobody holds any more (a secret's previous version, an outage's
failure) can never be asked for again, and must not wait for the budget to push it out.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedMemo(Generic[K, V]):
    """Thread-safe memo within a size budget (`size` of each value, at least 1)."""

    def __init__(self, budget: int, size: Callable[[V], int] = lambda _value: 1) -> None:
        self._budget = budget
        self._size = size
        self._entries: dict[K, tuple[V, int]] = {}
        self._used = 0
        # Re-entrant: freeing an evicted value can run a weakref callback that discards
        # another entry (IdentityMemo), in the same thread, under the same lock.
        self._lock = threading.RLock()

    def get(self, key: K) -> V | None:
        held = self._entries.get(key)  # a plain dict read: safe without the lock
        return None if held is None else held[0]

    def put(self, key: K, value: V) -> None:
        cost = max(1, self._size(value))
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._used -= old[1]
            while self._entries and self._used + cost > self._budget:
                _, (_, freed) = _pop_oldest(self._entries)
                self._used -= freed
            self._entries[key] = (value, cost)
            self._used += cost

    def discard(self, key: K) -> None:
        with self._lock:
            held = self._entries.pop(key, None)
            if held is not None:
                self._used -= held[1]


def _pop_oldest(entries: dict[K, tuple[V, int]]) -> tuple[K, tuple[V, int]]:
    key = next(iter(entries))
    return key, entries.pop(key)


class IdentityMemo(Generic[V]):
    """Values keyed by (the identities of some objects, a hashable extra), held as long as
    every one of those objects lives (and the budget allows)."""

    def __init__(self, budget: int, size: Callable[[V], int]) -> None:
        self._memo: BoundedMemo[Hashable, tuple[tuple[Any, ...], V]] = BoundedMemo(
            budget, lambda held: size(held[1])
        )

    def get(self, objects: Sequence[object], extra: Hashable, make: Callable[[], V]) -> V:
        key = (tuple(map(id, objects)), extra)
        held = self._memo.get(key)
        if held is not None and all(
            ref() is obj for ref, obj in zip(held[0], objects, strict=True)
        ):
            return held[1]
        value = make()

        def forget(_gone: object, key: Hashable = key) -> None:
            self._memo.discard(key)  # runs when an input dies, before its id can be reused

        self._memo.put(key, (tuple(weakref.ref(obj, forget) for obj in objects), value))
        return value
