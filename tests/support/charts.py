"""Helm charts as the tests read them: the objects a render gives, and values as Helm merges them."""

from __future__ import annotations

from typing import Any

import yaml


def manifests(files: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object of a render (templates' YAML documents; NOTES.txt left out)."""
    return [
        doc
        for path, text in files.items()
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` over `base`, maps merged key by key: what `helm upgrade --reuse-values -f
    extra` gives a release whose values were `base`."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
