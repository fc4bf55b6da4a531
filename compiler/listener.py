"""Step 4, apply: put our basic_auth filter into every HTTP connection manager of a listener.

Every `filter_chains` entry and the `default_filter_chain` is visited, HTTP/1-2 and
HTTP/3 (QUIC) alike; a manager is found by its typed_config type, whatever its name,
and also when it is written as a TypedStruct (its config as a Struct), which Envoy runs
just the same.
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
from google.protobuf import json_format, struct_pb2
from google.protobuf.message import DecodeError
from xds.type.v3 import typed_struct_pb2

from compiler.exemptions import exempt_predicate, filters_see_the_forwarded_path
from compiler.filters import FILTER_NAME, detached, insertion_index, place_filter
from compiler.headers import hide_credentials_filter, place_companions, username_guard_filter
from compiler.matching import skip_when
from compiler.model import Exemption, GatewayListener

HCM_TYPE = http_connection_manager_pb2.HttpConnectionManager.DESCRIPTOR.full_name
# Envoy accepts any extension's config as a TypedStruct (the type URL and the config as a
# Struct, i.e. JSON) and runs it as the typed message: a manager written that way is a
# manager too. The two types have the same fields, numbers and meaning.
TYPED_STRUCT_TYPES = frozenset(
    {typed_struct_pb2.TypedStruct.DESCRIPTOR.full_name, "udpa.type.v1.TypedStruct"}
)


@dataclass(frozen=True)
class ChainAuth:
    """What one filter chain's HTTP managers get: the htpasswd text and the header, the
    requests that need no credentials, and whether credentials are hidden from backends."""

    htpasswd: str
    forward_username_header: str
    # Requests that need no credentials on the whole chain (the union of its policies').
    exemptions: tuple[Exemption, ...] = ()
    # ... or only on the virtual hosts of one Gateway listener each (the Translation hook,
    # where Gateways share the chain and their virtual hosts tell them apart).
    per_gateway: tuple[tuple[GatewayListener, tuple[Exemption, ...]], ...] = ()
    # Remove `Authorization: Basic` once checked: on the whole chain, or on these listeners'.
    hide_credentials: bool = False
    hide_on: tuple[GatewayListener, ...] = ()


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
    for chain, is_default in _chains(result):
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
    return [
        (chain.name or None, is_default)
        for chain, is_default in _chains(listener)
        if any(_is_http_manager(f) for f in chain.filters)
    ]


def http_managers(listener: Any) -> list[Any]:
    """Every HTTP connection manager of the listener, as its network filter (typed or a
    TypedStruct)."""
    return [f for chain, _ in _chains(listener) for f in chain.filters if _is_http_manager(f)]


def _chains(listener: Any) -> list[tuple[Any, bool]]:
    """Every filter chain of the listener, with whether it is the default one."""
    chains = [(chain, False) for chain in listener.filter_chains]
    if listener.HasField("default_filter_chain"):
        chains.append((listener.default_filter_chain, True))
    return chains


def basic_auth_filter(auth: ChainAuth) -> Any:
    config = basic_auth_pb2.BasicAuth(forward_username_header=auth.forward_username_header)
    config.users.inline_string = auth.htpasswd
    http_filter = http_connection_manager_pb2.HttpFilter(name=FILTER_NAME)
    http_filter.typed_config.Pack(config, deterministic=True)
    return http_filter


def _is_http_manager(network_filter: Any) -> bool:
    if not network_filter.HasField("typed_config"):
        return False
    kind = _type_name(network_filter.typed_config.type_url)
    if kind == HCM_TYPE:
        return True
    if kind not in TYPED_STRUCT_TYPES:
        return False
    typed_struct = _typed_struct(network_filter)
    # One that cannot be read may be a manager: it is reported like an undecodable one.
    return typed_struct is None or _type_name(typed_struct.type_url) == HCM_TYPE


def _type_name(type_url: str) -> str:
    """The message name of a type URL, as Envoy reads it: what follows the last '/'."""
    return type_url.rpartition("/")[2]


def _protect_manager(network_filter: Any, auth: ChainAuth) -> bool:
    """Add our filter to one manager; False if its config cannot be decoded.

    An undecodable manager is left as it is: Envoy cannot decode it either and rejects
    the listener, so nothing is served without authentication.
    """
    if _type_name(network_filter.typed_config.type_url) in TYPED_STRUCT_TYPES:
        return _protect_struct_manager(network_filter, auth)
    manager = http_connection_manager_pb2.HttpConnectionManager()
    try:
        if not network_filter.typed_config.Unpack(manager):
            return False
    except DecodeError:
        return False
    exempt = _exempt(auth, manager)
    new_filter = skip_when(basic_auth_filter(auth), exempt)
    guard = username_guard_filter(auth.forward_username_header) if exempt is not None else None
    hide = _hider(auth, exempt)
    # An upgrade (WebSocket, CONNECT) with a filter list of its own skips http_filters:
    # it must authenticate too.
    lists = [manager.http_filters, *(u.filters for u in manager.upgrade_configs if len(u.filters))]
    for filters in lists:
        place_filter(filters, new_filter)
        place_companions(filters, guard=guard, hide=hide)
    type_url = network_filter.typed_config.type_url
    network_filter.typed_config.Pack(manager, deterministic=True)
    network_filter.typed_config.type_url = type_url
    return True


def _exempt(auth: ChainAuth, manager: Any) -> Any | None:
    """The predicate of the requests that need no credentials here, or None.

    None also where the manager normalises the path for its filters only: an exemption
    could then be matched on a path the backend never receives, so everything needs
    credentials there (fail closed; Envoy Gateway never configures that).
    """
    if not (auth.exemptions or auth.per_gateway):
        return None
    if not filters_see_the_forwarded_path(manager):
        return None
    return exempt_predicate(auth.exemptions, dict(auth.per_gateway))


def _hider(auth: ChainAuth, exempt: Any | None) -> Any | None:
    """The filter that hides `Authorization: Basic` from backends, where it is asked for."""
    if auth.hide_credentials:
        return hide_credentials_filter(exempt)
    if auth.hide_on:
        return hide_credentials_filter(exempt, only_on=auth.hide_on)
    return None


def _typed_struct(network_filter: Any) -> Any:
    """The filter's TypedStruct, or None if its bytes are not one."""
    try:
        return typed_struct_pb2.TypedStruct.FromString(network_filter.typed_config.value)
    except DecodeError:
        return None


def _protect_struct_manager(network_filter: Any, auth: ChainAuth) -> bool:
    """The same for a manager written as a TypedStruct: our filter goes into the Struct.

    Envoy reads the Struct as JSON, and reads it leniently: a field may be spelled
    `http_filters` or `httpFilters` (Envoy joins the two lists), null stands for the
    field's default, and a single object where a list belongs is a list of one. Every
    list present gets the filter, upgrade configs with filters of their own too. A filter
    list of anything else is left as it is (Envoy rejects it), and reported. Exemptions
    and hidden credentials are not applied in this form (Envoy Gateway never writes it):
    every request needs credentials there, and they reach the backend.
    """
    typed_struct = _typed_struct(network_filter)
    if typed_struct is None:
        return False
    config = typed_struct.value.fields
    lists = _struct_lists(config, "http_filters", "httpFilters")
    if lists is None:
        return False
    if not lists:
        config["http_filters"].list_value.SetInParent()
        lists = [config["http_filters"].list_value]
    new_filter = _struct_value(basic_auth_filter(auth))
    for filters in lists:
        _place_struct_filter(filters.values, new_filter)
    # An upgrade config Envoy could not read makes it reject the manager: only the
    # readable ones need the filter, each spelling on its own.
    for key in ("upgrade_configs", "upgradeConfigs"):
        for upgrades in _struct_lists(config, key) or []:
            for upgrade in upgrades.values:
                for filters in _struct_lists(upgrade.struct_value.fields, "filters") or []:
                    if len(filters.values):
                        _place_struct_filter(filters.values, new_filter)
    network_filter.typed_config.value = typed_struct.SerializeToString(deterministic=True)
    return True


def _struct_lists(fields: Any, *keys: str) -> list[Any] | None:
    """The ListValues under any of `keys`, as Envoy's JSON reader sees them; None if one
    of them holds what Envoy rejects (a string, a number, a boolean).

    Null is "not set"; a single object is turned into the list of one it stands for.
    """
    found = []
    for key in keys:
        kind = fields[key].WhichOneof("kind") if key in fields else "null_value"
        if kind == "struct_value":
            single = struct_pb2.Value()
            single.CopyFrom(fields[key])
            fields[key].list_value.values.append(single)
            kind = "list_value"
        if kind == "list_value":
            found.append(fields[key].list_value)
        elif kind != "null_value":
            return None
    return found


def _struct_value(http_filter: Any) -> Any:
    """An HttpFilter as a Struct Value, in the JSON form Envoy reads a TypedStruct in."""
    value = struct_pb2.Value()
    value.struct_value.update(
        json_format.MessageToDict(http_filter, preserving_proto_field_name=True)
    )
    return value


def _place_struct_filter(values: Any, new_filter: Any) -> None:
    """`place_filter` for a Struct's list of filters: ranked by the same rules."""
    kept = [detached(value) for value in values if _struct_filter(value).name != FILTER_NAME]
    kept.insert(insertion_index([_struct_filter(value) for value in kept], FILTER_NAME), new_filter)
    del values[:]
    values.extend(kept)


def _struct_filter(value: Any) -> Any:
    """An HttpFilter with the name and type of a Struct filter entry, for ranking only."""
    proxy = http_connection_manager_pb2.HttpFilter()
    if value.WhichOneof("kind") != "struct_value":
        return proxy
    fields = value.struct_value.fields
    if "name" in fields:
        proxy.name = fields["name"].string_value
    for key in ("typed_config", "typedConfig"):
        if key in fields and "@type" in fields[key].struct_value.fields:
            proxy.typed_config.type_url = fields[key].struct_value.fields["@type"].string_value
    return proxy
