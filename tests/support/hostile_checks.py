"""What a protected answer is, checked the same way by the hostile corpus and the fuzz run.

`check_protected(sent, answer)` holds when every HTTP connection manager Envoy could run
holds exactly one filter of ours, placed where Envoy Gateway ranks basic_auth, with a
table Envoy reads (and, given the users offered, nobody else in it); when every manager
that cannot be decoded, and every other filter, is unchanged; and when nothing but our
filter changed (`without_our_filter`). Managers come typed or as a TypedStruct, whose
Struct is read the way Envoy's JSON reader reads it: `http_filters` or `httpFilters`,
null for "not set", a single object for a list of one.
"""

from __future__ import annotations

from typing import Any

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.basic_auth.v3 import basic_auth_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import json_format, struct_pb2
from google.protobuf.message import DecodeError
from xds.type.v3 import typed_struct_pb2

from compiler.filters import BASIC_AUTH_RANK, FILTER_ORDER, filter_kind
from compiler.htpasswd import parse_like_envoy
from compiler.listener import FILTER_NAME, HCM_TYPE, TYPED_STRUCT_TYPES

Listener = Any  # envoy.config.listener.v3.Listener


class Crash(AssertionError):
    """A broken invariant (an escaping exception is a crash as it is)."""


def require(condition: bool, problem: str) -> None:
    if not condition:
        raise Crash(problem)


def network_filters(listener: Listener) -> list[Any]:
    chains = [*listener.filter_chains]
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    return [network for chain in chains for network in chain.filters]


def check_protected(
    sent: Listener, answer: Listener, offered: set[tuple[str, str]] | None = None
) -> None:
    """Every decodable manager holds exactly one filter of ours, placed where Envoy Gateway
    would put it, with a table Envoy reads; undecodable ones and all else are unchanged."""
    before, after = network_filters(sent), network_filters(answer)
    require(len(before) == len(after), "network filters were added or removed")
    for old, new in zip(before, after, strict=True):
        shape = manager_shape(old)
        if shape is None:
            require(serialized(old) == serialized(new), "a filter that is no manager changed")
            continue
        lists = _our_lists(new, shape)
        if lists is None:
            require(serialized(old) == serialized(new), "an undecodable manager was changed")
            continue
        for filters, is_upgrade in lists:
            ours = [f for f in filters if f.name == FILTER_NAME]
            if is_upgrade and not filters:
                continue
            require(len(ours) == 1, f"{len(ours)} filters of ours in a manager's list")
            index = [f.name for f in filters].index(FILTER_NAME)
            for earlier in filters[:index]:
                rank = FILTER_ORDER.index(filter_kind(earlier)) if _ranked(earlier) else -1
                require(
                    rank < BASIC_AUTH_RANK
                    or (rank == BASIC_AUTH_RANK and earlier.name < FILTER_NAME),
                    f"our filter comes after {earlier.name!r}",
                )
            table = parse_like_envoy(_users(ours[0]))  # raises EnvoyWouldReject
            if offered is not None:
                require(set(table.items()) <= offered, "a user no policy offered is admitted")
    require(
        without_our_filter(answer) == without_our_filter(sent),
        "something besides our filter changed",
    )


def _ranked(http_filter: Any) -> bool:
    return filter_kind(http_filter) in FILTER_ORDER


def manager_shape(network: Any) -> str | None:
    if not network.HasField("typed_config"):
        return None
    kind = network.typed_config.type_url.rpartition("/")[2]
    if kind == HCM_TYPE:
        return "typed"
    if kind in TYPED_STRUCT_TYPES:
        try:
            inner = typed_struct_pb2.TypedStruct.FromString(network.typed_config.value)
        except DecodeError:
            return "struct"
        return "struct" if inner.type_url.rpartition("/")[2] == HCM_TYPE else None
    return None


def _our_lists(network: Any, shape: str) -> list[tuple[list[Any], bool]] | None:
    """The manager's filter lists as HttpFilters (flag: an upgrade's), or None if undecodable."""
    if shape == "typed":
        hcm = hcm_pb2.HttpConnectionManager()
        try:
            if not network.typed_config.Unpack(hcm):
                return None  # a type URL without '/': Envoy cannot unpack it either
        except DecodeError:
            return None
        lists = [(list(hcm.http_filters), False)]
        return lists + [(list(upgrade.filters), True) for upgrade in hcm.upgrade_configs]
    try:
        config = typed_struct_pb2.TypedStruct.FromString(network.typed_config.value).value
    except DecodeError:
        return None
    found: list[tuple[list[Any], bool]] = []
    for key in ("http_filters", "httpFilters"):
        filters = _as_envoy_reads_it(config.fields, key)
        if filters is False:
            return None
        if filters is not None:
            found.append((_struct_filters(filters), False))
    require(bool(found), "a TypedStruct manager without any filter list")
    for key in ("upgrade_configs", "upgradeConfigs"):
        upgrades = _as_envoy_reads_it(config.fields, key)
        if upgrades is None or upgrades is False:
            continue
        for upgrade in upgrades.values:
            own = _as_envoy_reads_it(upgrade.struct_value.fields, "filters")
            if own is not None and own is not False:
                found.append((_struct_filters(own), True))
    return found


def _as_envoy_reads_it(fields: Any, key: str) -> Any:
    """A repeated field of a Struct as Envoy's JSON reader takes it: its ListValue (a single
    object is made a list of one, in place), None when absent or null, False when Envoy
    rejects it (a string, a number, a boolean)."""
    kind = fields[key].WhichOneof("kind") if key in fields else "null_value"
    if kind == "struct_value":
        single = struct_pb2.Value()
        single.CopyFrom(fields[key])
        fields[key].list_value.values.append(single)
        kind = "list_value"
    if kind == "list_value":
        return fields[key].list_value
    return None if kind == "null_value" else False


def _struct_filters(values: Any) -> list[Any]:
    """Struct filter entries as HttpFilters (name, type URL and, for ours, its config).

    Read field by field: json_format cannot write every Struct (an infinite number).
    """
    found = []
    for value in values.values:
        http_filter = hcm_pb2.HttpFilter()
        fields = value.struct_value.fields if value.WhichOneof("kind") == "struct_value" else {}
        if "name" in fields and fields["name"].WhichOneof("kind") == "string_value":
            http_filter.name = fields["name"].string_value
        for key in ("typed_config", "typedConfig"):
            if key not in fields or fields[key].WhichOneof("kind") != "struct_value":
                continue
            config = fields[key].struct_value
            if http_filter.name == FILTER_NAME:
                json_format.ParseDict(json_format.MessageToDict(config), http_filter.typed_config)
            elif "@type" in config.fields:
                http_filter.typed_config.type_url = config.fields["@type"].string_value
        found.append(http_filter)
    return found


def _users(ours: Any) -> str:
    config = basic_auth_pb2.BasicAuth()
    require(ours.typed_config.Unpack(config), "our filter holds no BasicAuth")
    return str(config.users.inline_string)


def without_our_filter(listener: Listener) -> bytes:
    """The listener with our filter taken out of every manager, serialized deterministically."""
    copy = listener_pb2.Listener()
    copy.CopyFrom(listener)
    for network in network_filters(copy):
        shape = manager_shape(network)
        if shape == "typed":
            hcm = hcm_pb2.HttpConnectionManager()
            try:
                if not network.typed_config.Unpack(hcm):
                    continue
            except DecodeError:
                continue
            _drop_ours(hcm.http_filters)
            for upgrade in hcm.upgrade_configs:
                _drop_ours(upgrade.filters)
            type_url = network.typed_config.type_url
            network.typed_config.Pack(hcm, deterministic=True)
            network.typed_config.type_url = type_url
        elif shape == "struct":
            _drop_ours_from_struct(network)
    return serialized(copy)


def _drop_ours(filters: Any) -> None:
    kept = [f for f in filters if f.name != FILTER_NAME]
    del filters[:]
    filters.extend(kept)


def _drop_ours_from_struct(network: Any) -> None:
    try:
        typed_struct = typed_struct_pb2.TypedStruct.FromString(network.typed_config.value)
    except DecodeError:
        return
    fields = typed_struct.value.fields
    lists = [(fields, key) for key in ("http_filters", "httpFilters")]
    for key in ("upgrade_configs", "upgradeConfigs"):
        upgrades = _as_envoy_reads_it(fields, key)
        if upgrades is not None and upgrades is not False:
            lists += [(u.struct_value.fields, "filters") for u in upgrades.values]
    for owner, key in lists:
        values = _as_envoy_reads_it(owner, key)
        if values is None and key in owner and key != "filters":
            del owner[key]  # JSON null is "not set": the hook may put a list there
        if values is None or values is False:
            continue
        kept = [_copy(v) for v in values.values if _struct_name(v) != FILTER_NAME]
        del values.values[:]
        values.values.extend(kept)
        if not kept and key != "filters":
            del owner[key]  # the list the hook creates when a manager has none
    if not fields:
        typed_struct.ClearField("value")  # ... and the Struct it goes in
    network.typed_config.value = typed_struct.SerializeToString(deterministic=True)


def _struct_name(value: Any) -> str:
    if value.WhichOneof("kind") != "struct_value" or "name" not in value.struct_value.fields:
        return ""
    return str(value.struct_value.fields["name"].string_value)


def _copy(value: Any) -> Any:
    clone = struct_pb2.Value()
    clone.CopyFrom(value)
    return clone


def serialized(message: Any) -> bytes:
    return bytes(message.SerializeToString(deterministic=True))
