"""Reuse of compiled results across hook calls, keyed by the identity of their inputs.

Envoy Gateway sends the same listeners with the same policies on every translation. The
resolver hands out the very same `Resolved` object while a policy and its stored secret
are unchanged, so the compiler can key its tables on object identity, which costs
nothing to compute whatever the number of users, and keep the inputs alive in the memo
so that an identity cannot be reused by another object. Bounded by a byte budget.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

from cachetools import LRUCache

V = TypeVar("V")


class IdentityMemo(Generic[V]):
    """Values keyed by (the identities of some objects, a hashable extra)."""

    def __init__(self, budget: int, size: Callable[[V], int]) -> None:
        self._lock = threading.Lock()
        self._entries: LRUCache[Hashable, tuple[tuple[object, ...], V]] = LRUCache(
            budget, getsizeof=lambda entry: size(entry[1]) + 1
        )

    def get(self, objects: Sequence[object], extra: Hashable, make: Callable[[], V]) -> V:
        key = (tuple(map(id, objects)), extra)
        with self._lock:
            held = self._entries.get(key)
        if held is not None and all(a is b for a, b in zip(held[0], objects, strict=True)):
            return held[1]
        value = make()
        with self._lock:
            self._entries[key] = (tuple(objects), value)
        return value
