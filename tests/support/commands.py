"""The installed `extension-server` console script, as a user runs it.

Taken from the virtual environment that runs the tests (next to its Python), not from
PATH, so the tests exercise what `pip install` put there even when the venv is not
activated (as in CI).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

EXTENSION_SERVER = str(Path(sys.executable).with_name("extension-server"))


def run_command(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60, **options: Any
) -> subprocess.CompletedProcess[str]:
    """`extension-server ARGS` to its end, its output captured as text, whatever its status."""
    return subprocess.run(
        [EXTENSION_SERVER, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else dict(env),
        check=False,
        **options,
    )
