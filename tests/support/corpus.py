"""Where the shared conformance corpus lives, and what to do when it is not there."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

# ../shared/ next to the checkout: present in CI and in a developer's workspace, not in a
# user's clone. Read in place, never copied into the project.
CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "eg-listeners"
REQUIRE_SHARED = "EXTENSION_SERVER_REQUIRE_SHARED"


def require_corpus() -> Path:
    """The corpus folder; skip the test without it, or fail where .ci/run requires it."""
    if not CORPUS.is_dir():
        unavailable(
            f"shared conformance corpus not found at {CORPUS} (it sits next to the checkout)"
        )
    return CORPUS


def unavailable(reason: str) -> NoReturn:
    """Skip the test for `reason`, or fail it where .ci/run requires what is missing."""
    if os.environ.get(REQUIRE_SHARED) == "1":
        pytest.fail(f"{reason}; {REQUIRE_SHARED}=1 requires it")
    pytest.skip(reason)
