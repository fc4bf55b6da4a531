"""Every password, hash and token the tests hand to the product, so logs can be checked.

`remember` is called by the builders and stand-ins that create credentials; the
session-end check in tests/conftest.py then reads every log the suite wrote (in-process
and subprocess) and fails the run if one of them, or its `{SHA}` hash, appears.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from collections.abc import Iterable
from pathlib import Path

MIN_LENGTH = 6  # shorter test values ("x", "pw") would match ordinary words
ANY_SHA_HASH = re.compile(r"\{SHA\}[A-Za-z0-9+/]{27}=")

_lock = threading.Lock()
_known: set[str] = set()


def remember(*values: object) -> None:
    with _lock:
        _known.update(
            value for value in values if isinstance(value, str) and len(value) >= MIN_LENGTH
        )


def sha(value: str) -> str:
    return "{SHA}" + base64.b64encode(hashlib.sha1(value.encode()).digest()).decode()


def leaks(texts: Iterable[tuple[str, str]]) -> list[str]:
    """`where: what` for every remembered secret or any {SHA} hash found in the texts."""
    with _lock:
        needles = {value: "a test secret" for value in _known}
    found = []
    for where, text in texts:
        if ANY_SHA_HASH.search(text):
            found.append(f"{where}: a {{SHA}} hash")
        for needle, what in needles.items():
            if needle in text:
                found.append(f"{where}: {what} ({len(needle)} characters)")
    return found


LOG_SUFFIXES = (".log", ".stdout", ".stderr")


def log_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and path.suffix in LOG_SUFFIXES]
