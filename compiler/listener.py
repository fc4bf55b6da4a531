"""Step 4, apply: put our basic_auth filter into every HTTP connection manager of a listener.

Every `filter_chains` entry and the `default_filter_chain` is visited, HTTP/1-2 and
HTTP/3 (QUIC) alike; a manager is found by its typed_config type, whatever its name.
Chains without one (tcp_proxy, TLS passthrough) are left untouched, and so is every
other filter, Envoy Gateway's own SecurityPolicy basic_auth filters included. Applying
the same plan to the output gives the same output (idempotent).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.basic_auth.v3 import basic_auth_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2,
)
from google.protobuf.message import DecodeError

from compiler.filters import place_filter

# Our filter's name: Envoy Gateway's basic_auth prefix (so its ordering knows the type)
# followed by a suffix no SecurityPolicy filter can have.
FILTER_NAME = "envoy.filters.http.basic_auth/extension-server"
HCM_TYPE = http_connection_manager_pb2.HttpConnectionManager.DESCRIPTOR.full_name


@dataclass(frozen=True)
class ChainAuth:
    """What one filter chain's HTTP managers get: the htpasswd text and the header."""

    htpasswd: str
    forward_username_header: str


# chain name (or None for an unnamed chain), is-default -> what to apply, or None to skip
ChainPlan = Callable[[str | None, bool], ChainAuth | None]


@dataclass
class ApplyReport:
    """What `apply` did, for the caller's log line."""

    managers_protected: int = 0
    managers_skipped: int = 0
    undecodable: list[str] = field(default_factory=list)


def apply(listener: Any, plan: ChainPlan) -> tuple[Any, ApplyReport]:
    """A copy of `listener` with our filter in every HTTP manager `plan` asks for."""
    result = listener_pb2.Listener()
    result.CopyFrom(listener)
    report = ApplyReport()
    chains = [(chain, False) for chain in result.filter_chains]
    if result.HasField("default_filter_chain"):
        chains.append((result.default_filter_chain, True))
    for chain, is_default in chains:
        managers = [f for f in chain.filters if _is_http_manager(f)]
        if not managers:
            continue
        auth = plan(chain.name or None, is_default)
        if auth is None:
            report.managers_skipped += len(managers)
            continue
        for network_filter in managers:
            if _protect_manager(network_filter, auth):
                report.managers_protected += 1
            else:
                report.undecodable.append(chain.name or "<default>")
    return result, report


def chains_with_managers(listener: Any) -> list[tuple[str | None, bool]]:
    """(name, is-default) of every filter chain that holds an HTTP connection manager."""
    chains = [(chain, False) for chain in listener.filter_chains]
    if listener.HasField("default_filter_chain"):
        chains.append((listener.default_filter_chain, True))
    return [
        (chain.name or None, is_default)
        for chain, is_default in chains
        if any(_is_http_manager(f) for f in chain.filters)
    ]


def basic_auth_filter(auth: ChainAuth) -> Any:
    config = basic_auth_pb2.BasicAuth(forward_username_header=auth.forward_username_header)
    config.users.inline_string = auth.htpasswd
    http_filter = http_connection_manager_pb2.HttpFilter(name=FILTER_NAME)
    http_filter.typed_config.Pack(config, deterministic=True)
    return http_filter


def _is_http_manager(network_filter: Any) -> bool:
    if not network_filter.HasField("typed_config"):
        return False
    return bool(network_filter.typed_config.type_url.rpartition("/")[2] == HCM_TYPE)


def _protect_manager(network_filter: Any, auth: ChainAuth) -> bool:
    """Add our filter to one manager; False if its config cannot be decoded.

    An undecodable manager is left as it is: Envoy cannot decode it either and rejects
    the listener, so nothing is served without authentication.
    """
    manager = http_connection_manager_pb2.HttpConnectionManager()
    try:
        if not network_filter.typed_config.Unpack(manager):
            return False
    except DecodeError:
        return False
    new_filter = basic_auth_filter(auth)
    place_filter(manager.http_filters, new_filter)
    # An upgrade (WebSocket, CONNECT) with a filter list of its own skips http_filters:
    # it must authenticate too.
    for upgrade in manager.upgrade_configs:
        if len(upgrade.filters):
            place_filter(upgrade.filters, new_filter)
    type_url = network_filter.typed_config.type_url
    network_filter.typed_config.Pack(manager, deterministic=True)
    network_filter.typed_config.type_url = type_url
    return True
