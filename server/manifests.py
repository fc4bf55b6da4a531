"""Kubernetes manifests and Envoy listeners read from YAML files, for the CLI and the demo."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as the strings the API server sends."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_yaml_documents(text: str) -> list[Any]:
    return [doc for doc in yaml.load_all(text, Loader=_Loader) if doc is not None]


def read_policies(paths: Iterable[Path]) -> tuple[list[bytes], list[str]]:
    """Every document of every file as JSON bytes (as Envoy Gateway sends them), and its source."""
    raw: list[bytes] = []
    sources: list[str] = []
    for path in paths:
        more_raw, more_sources = policies_from_text(path.read_text(), str(path))
        raw += more_raw
        sources += more_sources
    return raw, sources


def policies_from_text(text: str, source: str) -> tuple[list[bytes], list[str]]:
    """Every document of `text` as JSON bytes, and its source (`<source>#<number>`)."""
    documents = load_yaml_documents(text)
    raw = [json.dumps(doc).encode() for doc in documents]
    return raw, [f"{source}#{number}" for number in range(1, len(documents) + 1)]


def read_listeners(path: Path) -> list[dict[str, Any]]:
    """A listener, a YAML list of listeners, or several documents, as proto3 JSON dicts."""
    listeners: list[dict[str, Any]] = []
    for doc in load_yaml_documents(path.read_text()):
        listeners.extend(doc if isinstance(doc, list) else [doc])
    return listeners


def dump_yaml(data: Any) -> str:
    return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
