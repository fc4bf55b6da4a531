"""What `make fuzz` (reliability/fuzz.py) found, kept as tests so it stays fixed.

Each test starts from the input the fuzzer shrank a crash to, written out readably.
The same inputs run end to end, over gRPC and through Envoy, in tests/support/hostile_cases.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.listener.v3 import listener_pb2
from google.protobuf import json_format
from udpa.type.v1 import typed_struct_pb2 as udpa_typed_struct_pb2
from xds.type.v3 import typed_struct_pb2

from compiler.errors import MalformedPolicyError
from compiler.htpasswd import parse_like_envoy
from compiler.listener import FILTER_NAME, HCM_TYPE
from compiler.parse import parse_resources
from tests.support.builders import http_listener, managers, policy
from tests.support.compile import hook, users_of
from tests.support.hostile_cases import manager_of_single_objects
from tests.support.secrets import sha

HCM_URL = f"type.googleapis.com/{HCM_TYPE}"
ALICE = policy("alice-policy", "alice", "alice-fuzz-pw")


# --- policy-json: RecursionError escaped the parser ----------------------------------------


def test_json_nested_deeper_than_python_recurses_is_one_bad_policy_not_a_failed_call() -> None:
    """json.loads recurses once per '[': a policy of a few kilobytes made the whole hook call
    fail (INTERNAL), so no listener of the Gateway got its update. Now it is one bad policy."""
    # The fuzzer shrank it to a thousand '[' (just past the recursion limit); a hundred
    # thousand holds whatever limit the process runs with (some libraries raise it).
    shrunk = b'{"apiVersion": ' + b"[" * 100_000 + b"1" + b"]" * 100_000 + b', "kind": "x"}'
    (error,) = parse_resources([shrunk])
    assert isinstance(error, MalformedPolicyError)
    assert error.field == "unstructured_bytes" and "too deeply" in error.problem
    result = hook(shrunk, ALICE)
    assert users_of(result) == {"alice": sha("alice-fuzz-pw")}
    assert [str(e.policy) for e in result.errors] == ["<unknown>/extension_resources[0]"]


# --- listener-bytes: a manager written as a TypedStruct was served without our filter -------


def struct_manager(
    message: Any = typed_struct_pb2.TypedStruct, *, camel: bool = False, upgrade: bool = False
) -> Any:
    """A listener whose manager is a TypedStruct: Envoy runs it like the typed form."""
    listener = http_listener()
    (hcm,) = managers(listener)
    if upgrade:
        hcm.upgrade_configs.add(upgrade_type="websocket").filters.append(hcm.http_filters[-1])
    typed_struct = message(type_url=HCM_URL)
    typed_struct.value.update(json_format.MessageToDict(hcm, preserving_proto_field_name=not camel))
    listener.default_filter_chain.filters[0].typed_config.Pack(typed_struct)
    return listener


def struct_config(listener: Any) -> dict[str, Any]:
    value = listener.default_filter_chain.filters[0].typed_config.value
    return dict(json_format.MessageToDict(typed_struct_pb2.TypedStruct.FromString(value).value))


@pytest.mark.parametrize(
    "message", [typed_struct_pb2.TypedStruct, udpa_typed_struct_pb2.TypedStruct]
)
@pytest.mark.parametrize("camel", [False, True], ids=["http_filters", "httpFilters"])
def test_a_manager_written_as_a_typed_struct_gets_our_filter_before_the_router(
    message: Any, camel: bool
) -> None:
    """Envoy accepts a TypedStruct for any extension: the hook left such a manager without
    authentication, and Envoy served it."""
    result = hook(ALICE, listener=struct_manager(message, camel=camel, upgrade=True))
    config = struct_config(result.listener)
    filters = config["httpFilters" if camel else "http_filters"]
    assert [f["name"] for f in filters] == [FILTER_NAME, "envoy.filters.http.router"]
    users = filters[0]["typed_config"]["users"]["inline_string"]
    assert parse_like_envoy(users) == {"alice": sha("alice-fuzz-pw")}
    (upgrade,) = config["upgradeConfigs" if camel else "upgrade_configs"]
    assert [f["name"] for f in upgrade["filters"]] == [FILTER_NAME, "envoy.filters.http.router"]
    assert result.report.managers_protected == 1
    again = hook(ALICE, listener=result.listener).listener
    assert again.SerializeToString(deterministic=True) == result.listener.SerializeToString(
        deterministic=True
    )


def test_a_typed_struct_manager_without_any_config_gets_a_filter_list_of_ours() -> None:
    """Shrunk by the fuzzer: no Struct at all. Envoy rejects a manager without routes, and
    with ours in it there is nothing left that could serve unauthenticated."""
    listener = listener_pb2.Listener(name="fuzz")
    listener.default_filter_chain.filters.add().typed_config.Pack(
        typed_struct_pb2.TypedStruct(type_url=HCM_URL)
    )
    result = hook(ALICE, listener=listener)
    assert [f["name"] for f in struct_config(result.listener)["http_filters"]] == [FILTER_NAME]
    assert hook(ALICE, listener=result.listener).listener == result.listener


def test_a_typed_struct_manager_whose_filters_are_no_list_is_left_unchanged_and_reported() -> None:
    """Envoy cannot read it either, so it rejects the listener: nothing serves unprotected."""
    listener = struct_manager()
    typed_struct = typed_struct_pb2.TypedStruct(type_url=HCM_URL)
    typed_struct.value.update({"http_filters": "router", "stat_prefix": "x"})
    listener.default_filter_chain.filters[0].typed_config.Pack(typed_struct)
    result = hook(ALICE, listener=listener)
    assert result.listener == listener
    assert result.report.undecodable == ["default/eg/http"]


# --- listener-shape: a false alarm that pins down a rule --------------------------------------


def test_a_manager_whose_type_url_has_no_slash_is_left_unchanged_and_reported() -> None:
    """protobuf (and Envoy's C++ protobuf) unpack an Any only if a '/' precedes the type
    name: Envoy rejects this listener ("Unable to unpack"), so reporting it is right."""
    listener = http_listener()
    listener.default_filter_chain.filters[0].typed_config.type_url = HCM_TYPE
    result = hook(ALICE, listener=listener)
    assert result.listener == listener
    assert result.report.undecodable == ["default/eg/http"]


@pytest.mark.parametrize("field", ["http_filters", "upgrade_configs"])
def test_a_null_beside_the_other_spelling_does_not_hide_a_filter_list(field: str) -> None:
    """Shrunk by the fuzzer after the TypedStruct fix: `upgrade_configs: null` made the hook
    skip `upgradeConfigs`, whose WebSocket filters Envoy runs (JSON null means "not set"),
    and `http_filters: null` made it leave the whole manager alone. Envoy accepts both."""
    listener = http_listener()
    (hcm,) = managers(listener)
    config = json_format.MessageToDict(hcm)  # camelCase
    config["upgradeConfigs"] = [{"upgradeType": "websocket", "filters": config["httpFilters"]}]
    config[field] = None
    typed_struct = typed_struct_pb2.TypedStruct(type_url=HCM_URL)
    typed_struct.value.update(config)
    listener.default_filter_chain.filters[0].typed_config.Pack(typed_struct)
    result = hook(ALICE, listener=listener)
    out = struct_config(result.listener)
    assert out[field] is None
    assert [f["name"] for f in out["httpFilters"]] == [FILTER_NAME, "envoy.filters.http.router"]
    (upgrade,) = out["upgradeConfigs"]
    assert [f["name"] for f in upgrade["filters"]] == [FILTER_NAME, "envoy.filters.http.router"]


def test_a_single_object_where_a_filter_list_belongs_is_a_list_of_one() -> None:
    """Envoy's JSON reader takes `http_filters: {...}` as a list of one filter and runs it;
    the hook took it for something Envoy rejects and left the manager unprotected. Found
    by asking Envoy how it reads the shapes the fuzzer makes."""
    result = hook(ALICE, listener=manager_of_single_objects())
    out = struct_config(result.listener)
    expected = [FILTER_NAME, "envoy.filters.http.router"]
    assert [f["name"] for f in out["http_filters"]] == expected
    (upgrade,) = out["upgrade_configs"]
    assert [f["name"] for f in upgrade["filters"]] == expected
    assert hook(ALICE, listener=result.listener).listener == result.listener
