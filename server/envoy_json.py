"""Envoy resources as proto3 JSON/YAML (the form Envoy Gateway's corpus and Envoy use).

JSON needs every type an `Any` may carry to be known, so the first use imports all of
xds-protos (about a second). The gRPC path works on binary protobuf and never needs it.
"""

from __future__ import annotations

import functools
import importlib
import json
import pkgutil
from typing import Any

from envoy.config.listener.v3 import listener_pb2
from google.protobuf import json_format

_PACKAGES = ("envoy", "xds", "udpa")


@functools.cache
def register_envoy_types() -> int:
    """Import every generated module of xds-protos so Any payloads can be read as JSON."""
    count = 0
    for package_name in _PACKAGES:
        try:
            package = importlib.import_module(package_name)
        except ImportError:
            continue
        for module in pkgutil.walk_packages(package.__path__, f"{package_name}."):
            if module.name.endswith("_pb2"):
                importlib.import_module(module.name)
                count += 1
    return count


def listener_from_dict(data: dict[str, Any]) -> Any:
    register_envoy_types()
    return json_format.ParseDict(data, listener_pb2.Listener())


def to_dict(message: Any) -> dict[str, Any]:
    """Plain dicts and lists (YAML-dumpable), in proto3 JSON form."""
    register_envoy_types()
    return dict(json.loads(json_format.MessageToJson(message)))
