"""The credential remover and the username guard: what they remove, when Envoy skips them,
and where they sit among Envoy Gateway's filters.

The real Envoy's view (the backend's headers) is in tests/test_request_control_envoy.py;
here the emitted config is read through the matcher model.
"""

from __future__ import annotations

from typing import Any

import pytest
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2

from compiler.exemptions import Exemption, exempt_predicate
from compiler.filters import place_filter
from compiler.headers import (
    GUARD_FILTER_NAME,
    HIDE_FILTER_NAME,
    hide_credentials_filter,
    place_companions,
    username_guard_filter,
)
from compiler.listener import FILTER_NAME, ChainAuth, basic_auth_filter
from compiler.matching import skip_when, unwrap
from compiler.virtual_hosts import GatewayListener
from tests.support.builders import eg_security_filters, http_filter, router
from tests.support.matcher_model import Request, skips

BASIC = {"authorization": "Basic dXNlcjpwQHNzdzByZA=="}
BEARER = {"authorization": "Bearer eyJhbGciOi.x.y"}
HEALTHZ = exempt_predicate([Exemption("PathPrefix", "/healthz")])
TEAM_A, TEAM_B = GatewayListener("team-a", "gw"), GatewayListener("team-b", "gw")


def removed_headers(http_filter: Any) -> list[str]:
    inner, _predicate = unwrap(http_filter)
    config = header_mutation_pb2.HeaderMutation()
    assert inner.typed_config.Unpack(config)
    return [mutation.remove for mutation in config.mutations.request_mutations]


def removes(http_filter: Any, path: str = "/x", **request: Any) -> bool:
    return not skips(http_filter, Request(path, **request))


def test_the_remover_removes_basic_credentials_after_a_check_and_nothing_else() -> None:
    hide = hide_credentials_filter(HEALTHZ)
    assert hide.name == HIDE_FILTER_NAME
    assert removed_headers(hide) == ["authorization"]
    assert removes(hide, headers=BASIC)
    assert not removes(hide, headers=BEARER)  # another scheme is never touched
    assert not removes(hide, headers={"authorization": "basic dXNlcjpw"})  # not what Envoy checks
    assert not removes(hide)  # nothing to remove
    assert not removes(hide, "/healthz", headers=BASIC)  # exempt: nothing was checked


def test_the_remover_of_some_gateways_runs_on_their_virtual_hosts_only() -> None:
    hide = hide_credentials_filter(None, only_on=[TEAM_A])
    assert removes(hide, headers=BASIC, virtual_host_of=GatewayListener("team-a", "gw", "http"))
    assert not removes(hide, headers=BASIC, virtual_host_of=TEAM_B)
    assert not removes(hide, headers=BASIC, virtual_host_of=None)
    with pytest.raises(ValueError, match="names no Gateway listener"):
        hide_credentials_filter(None, only_on=[])


def test_the_guard_removes_the_clients_username_header_on_every_request() -> None:
    guard = username_guard_filter("X-Example-Ext")
    assert guard.name == GUARD_FILTER_NAME
    assert removed_headers(guard) == ["X-Example-Ext"]
    assert unwrap(guard)[1] is None


def eg_filters_with_ours(ours: Any) -> list[Any]:
    eg_header_mutation = http_filter(
        "envoy.filters.http.header_mutation", header_mutation_pb2.HeaderMutation()
    )
    filters: list[Any] = [eg_header_mutation, *eg_security_filters(), router()]
    place_filter(filters, ours)
    return filters


def names(filters: Any) -> list[str]:
    return [f.name.replace("envoy.filters.http.", "") for f in filters]


def test_the_guard_goes_right_before_our_filter_and_the_remover_right_after() -> None:
    ours = skip_when(basic_auth_filter(ChainAuth("# nobody\n", "X-Example-Ext")), HEALTHZ)
    filters = eg_filters_with_ours(ours)
    guard, hide = username_guard_filter("X-Example-Ext"), hide_credentials_filter(HEALTHZ)

    place_companions(filters, guard=guard, hide=hide)

    assert names(filters) == [
        "header_mutation",  # Envoy Gateway's own, untouched
        "health_check",
        "cors",
        "ext_authz/securitypolicy/default/a",
        "header_mutation/extension-server/username-guard",
        "basic_auth/extension-server",
        "header_mutation/extension-server/hide-credentials",
        "basic_auth/securitypolicy/default/sp",
        "oauth2/securitypolicy/default/o",
        "jwt_authn",
        "rbac",
        "router",
    ]


def test_placing_our_filter_and_its_companions_again_changes_nothing() -> None:
    ours = skip_when(basic_auth_filter(ChainAuth("# nobody\n", "X-Example-Ext")), HEALTHZ)
    guard, hide = username_guard_filter("X-Example-Ext"), hide_credentials_filter(HEALTHZ)
    filters = eg_filters_with_ours(ours)
    place_companions(filters, guard=guard, hide=hide)
    once = [f.SerializeToString(deterministic=True) for f in filters]

    place_filter(filters, ours)  # the remover ranks before basic_auth: ours moves past it...
    place_companions(filters, guard=guard, hide=hide)  # ...and the companions follow it

    assert [f.SerializeToString(deterministic=True) for f in filters] == once


def test_companions_that_are_not_wanted_any_more_are_removed() -> None:
    ours = basic_auth_filter(ChainAuth("# nobody\n", "X-Example-Ext"))
    filters = eg_filters_with_ours(ours)
    plain = list(filters)
    place_companions(
        filters, guard=username_guard_filter("X-Example-Ext"), hide=hide_credentials_filter()
    )
    place_companions(filters)
    assert filters == plain


def test_without_our_filter_no_companion_is_placed() -> None:
    filters = [router()]
    place_companions(filters, guard=username_guard_filter("X"), hide=hide_credentials_filter())
    assert names(filters) == ["router"]
    assert FILTER_NAME not in names(filters)
