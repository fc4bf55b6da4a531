"""The installed `extension-server` console script, as a user runs it.

Taken from the virtual environment that runs the tests (next to its Python), not from
PATH, so the tests exercise what `pip install` put there even when the venv is not
activated (as in CI).
"""

from __future__ import annotations

import sys
from pathlib import Path

EXTENSION_SERVER = str(Path(sys.executable).with_name("extension-server"))
