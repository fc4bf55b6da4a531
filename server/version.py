"""This server's version, as its installed distribution records it (pyproject.toml's)."""

from __future__ import annotations

from importlib import metadata

DISTRIBUTION = "extension-server"


def installed_version() -> str:
    """The version pip installed; "unknown" when the code runs without being installed."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"
