"""The demo's files, created so that nobody else can plant or read them.

`demo --workdir` may name a directory others can write to (/tmp/demo, a shared scratch
space). A file or link planted there under a name the demo uses would otherwise be
followed: the demo would write into whatever it points at. So every file is created
new (never opened if it exists, never through a link) and readable by its owner only,
and every directory is created new with owner-only access. What Envoy writes itself goes
into such a directory.
"""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
DIRECTORY_MODE = 0o700
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_ANY_FILE = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class WorkdirError(Exception):
    """A name the demo needs is taken in its work directory (a file, a directory, a link)."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"{path} exists already (a file, a directory or a link); the demo creates its "
            "files itself: remove it, or choose an empty --workdir"
        )
        self.path = path


def new_directory(path: Path) -> Path:
    """Create `path` (not its parents), owner-only; WorkdirError if the name is taken."""
    try:
        os.mkdir(path, DIRECTORY_MODE)
    except FileExistsError:
        raise WorkdirError(path) from None
    return path


def open_log(path: Path, *, new: bool) -> int:
    """A file descriptor to append to `path`, owner-only, never through a link.

    `new`: the file must not exist yet (WorkdirError if it does). Otherwise an existing
    regular file is appended to (a test or benchmark that starts a server twice).
    """
    try:
        return os.open(path, _NEW_FILE if new else _ANY_FILE, FILE_MODE)
    except FileExistsError:
        raise WorkdirError(path) from None
    except OSError as error:
        if os.path.islink(path):  # O_NOFOLLOW refused it (ELOOP)
            raise WorkdirError(path) from error
        raise


def write_new(path: Path, text: str) -> None:
    """Write `text` into a new file `path`, owner-only; WorkdirError if the name is taken."""
    with os.fdopen(open_log(path, new=True), "w") as file:
        file.write(text)
