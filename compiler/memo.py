"""Reuse of results across hook calls: the same policies arrive with every listener.

`BoundedMemo` is a dict with a size budget, evicting the oldest entries first: a hit is one
dict lookup, which matters on a path taken for every policy of every hook call. Keys are
values (a policy's value key, the bytes of a request, a listener's digest), never the
identity of an object. An entry may name the value keys it was built from (`parts`): when
one of them is superseded (a policy changed, its secret rotated), `retire` drops every entry
built from it at once, instead of leaving it to the budget.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedMemo(Generic[K, V]):
    """Thread-safe memo within a size budget (`size` of each value, at least 1)."""

    def __init__(self, budget: int, size: Callable[[V], int] = lambda _value: 1) -> None:
        self._budget = budget
        self._size = size
        self._entries: dict[K, _Held[V]] = {}
        # part -> the entries built from it, by serial number: a key can be a tuple of
        # thousands of value keys, which is hashed once on `put`, not once per part.
        self._by_part: dict[Hashable, dict[int, K]] = {}
        self._serials = itertools.count()
        self._used = 0
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        held = self._entries.get(key)  # a plain dict read: safe without the lock
        return None if held is None else held.value

    def put(self, key: K, value: V, parts: Iterable[Hashable] = ()) -> None:
        """Keep `value` for `key`; `parts` are the value keys it was built from."""
        cost = max(1, self._size(value))
        named = tuple(parts)
        with self._lock:
            self._drop(key)
            while self._entries and self._used + cost > self._budget:
                self._drop(next(iter(self._entries)))  # the oldest
            serial = next(self._serials)
            self._entries[key] = _Held(value, cost, named, serial)
            self._used += cost
            for part in named:
                self._by_part.setdefault(part, {})[serial] = key

    def discard(self, key: K) -> None:
        with self._lock:
            self._drop(key)

    def retire(self, part: Hashable) -> None:
        """Drop every entry built from `part`: nothing can ask for them any more."""
        with self._lock:
            for key in self._by_part.pop(part, {}).values():
                self._drop(key)

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: K) -> None:
        held = self._entries.pop(key, None)
        if held is None:
            return
        self._used -= held.cost
        for part in held.parts:
            keys = self._by_part.get(part)
            if keys is not None:
                keys.pop(held.serial, None)
                if not keys:
                    del self._by_part[part]


@dataclass(frozen=True, slots=True)
class _Held(Generic[V]):
    value: V
    cost: int
    parts: tuple[Hashable, ...]
    serial: int
