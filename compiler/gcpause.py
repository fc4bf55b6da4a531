"""Hold the cyclic garbage collector while one call builds a large table.

Compiling 100 000 users allocates several hundred thousand short-lived objects, none in
reference cycles; each allocation burst otherwise triggers full collections that scan
the whole heap, making the cold compile grow faster than the number of users.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

BULK = 5_000  # below this, collections cost nothing worth avoiding

_lock = threading.Lock()
_holders = 0


@contextmanager
def paused_gc(items: int) -> Iterator[None]:
    """No automatic collection while the block runs, if it handles `items` >= BULK."""
    global _holders  # noqa: PLW0603 (one process-wide counter)
    if items < BULK:
        yield
        return
    with _lock:
        _holders += 1
        gc.disable()
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                gc.enable()
