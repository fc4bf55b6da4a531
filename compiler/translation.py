"""The Translation hook: every listener and route configuration of a translation at once.

PostTranslateModify (with Envoy Gateway's `translation.listener.includeAll` and
`translation.route.includeAll`) hands the server every listener and every route
configuration together with every policy. That is what a listener-level filter lacks
when Gateways are merged onto one plain-HTTP filter chain: the route configurations say
which virtual host belongs to which Gateway (compiler/virtual_hosts.py). So:

- each listener is protected as the HTTPListener hook protects it (compiler/pipeline.py
  `compile_listener`), with the policies of the Gateways it serves: those its chains are
  named after, and those its route configurations' virtual hosts belong to; exemptions
  and hidden credentials scoped to each Gateway listener's own virtual hosts;
- each virtual host gets the users of its own Gateway listener only
  (compiler/routes.py `with_gateway_users`): the policies aimed at the whole Gateway and
  those aimed at its section; one with no policy admits nobody (with
  `unprotectedListeners: passthrough`, everyone: our filter is disabled there), one
  without Envoy Gateway's metadata nobody.

The listener-level table stays what the HTTPListener hook puts there, so both hooks may
be on at once: the second applies the same filter, by name, and the virtual hosts narrow
it. Every list comes back whole and in order (the response replaces them), unchanged
apart from our filters and the virtual hosts' per-filter config. The answer always fits:
the policy whose users add the most bytes to the whole answer is left out first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2,
)

from compiler.errors import TooLargeError
from compiler.listener import HCM_TYPE, http_managers
from compiler.model import CompileOptions, GatewayListener
from compiler.pipeline import (
    ChainTable,
    CompileMemo,
    ListenerResult,
    PolicySet,
    compile_listener,
    leaves_unprotected_open,
    table_bytes,
    targeted,
)
from compiler.routes import with_gateway_users
from compiler.scope import ChainName
from compiler.users import Resolved
from compiler.virtual_hosts import gateway_of


@dataclass(frozen=True)
class HostTable:
    """The table the virtual hosts of one Gateway listener hold in one route configuration."""

    routes: str  # the route configuration's name
    listener: GatewayListener
    table: ChainTable


@dataclass(frozen=True)
class TranslationResult:
    listeners: tuple[ListenerResult, ...]
    routes: tuple[Any, ...]  # envoy.config.route.v3.RouteConfiguration, in the order given
    policies: PolicySet  # with the policies left out for size, if any
    hosts: tuple[HostTable, ...] = ()  # per route configuration, per Gateway listener

    @property
    def size(self) -> int:
        return sum(result.size for result in self.listeners) + sum(
            int(route.ByteSize()) for route in self.routes
        )


def compile_translation(
    listeners: Sequence[Any],
    routes: Sequence[Any],
    policies: PolicySet,
    options: CompileOptions,
    max_bytes: int | None = None,
    memo: CompileMemo | None = None,
) -> TranslationResult:
    """Every listener protected, every virtual host holding its own Gateway's users.

    With `max_bytes` (what the rest of the answer leaves), while the listeners and routes
    are larger, the policy that adds the most to them is left out (TooLargeError).
    """
    memo = memo or CompileMemo.disabled()
    scoped = replace(options, per_gateway=True)
    served = [_gateways_served(listener, routes) for listener in listeners]
    while True:
        result = _translate(listeners, routes, served, policies, scoped, memo)
        if max_bytes is None or result.size <= max_bytes:
            return result
        victim = _largest(policies, listeners, served, routes)
        if victim is None:
            return result
        error = _too_large(victim, result.size, max_bytes)
        policies = policies.leaving_out(victim, error)


def _translate(
    listeners: Sequence[Any],
    routes: Sequence[Any],
    served: Sequence[set[tuple[str, str]]],
    policies: PolicySet,
    options: CompileOptions,
    memo: CompileMemo,
) -> TranslationResult:
    compiled = tuple(
        compile_listener(listener, _serving(policies, gateways), options, None, memo)
        for listener, gateways in zip(listeners, served, strict=True)
    )

    hosts: dict[tuple[str, GatewayListener], HostTable] = {}
    open_unprotected = leaves_unprotected_open(policies, options)
    changed = []
    for route in routes:

        def table_for(listener: GatewayListener, name: str = route.name) -> str | None:
            picked = [item for item in policies.resolved if _aimed_at(item, listener)]
            if not picked:
                return None
            table = memo.table(picked, options)[1]
            hosts[(name, listener)] = HostTable(name, listener, table)
            return table.auth.htpasswd

        changed.append(with_gateway_users(route, table_for, open_unprotected))
    return TranslationResult(compiled, tuple(changed), policies, tuple(hosts.values()))


def _gateways_served(listener: Any, routes: Sequence[Any]) -> set[tuple[str, str]]:
    """The Gateways (namespace, name) a listener serves: those its filter chains are named
    after, and those the virtual hosts of the route configurations it reads belong to."""
    served = set()
    for chain in [*listener.filter_chains, listener.default_filter_chain]:
        name = ChainName.parse(chain.name)
        if name is not None:
            served.add((name.namespace, name.gateway))
    names = _route_names(listener)
    for route in routes:
        if route.name in names:
            for virtual_host in route.virtual_hosts:
                owner = gateway_of(virtual_host)
                if owner is not None:
                    served.add((owner.namespace, owner.name))
    return served


def _route_names(listener: Any) -> set[str]:
    """The route configurations (by RDS name) the listener's HTTP managers read."""
    names = set()
    for network_filter in http_managers(listener):
        if network_filter.typed_config.type_url.rpartition("/")[2] != HCM_TYPE:
            continue
        manager = http_connection_manager_pb2.HttpConnectionManager()
        if network_filter.typed_config.Unpack(manager) and manager.HasField("rds"):
            names.add(manager.rds.route_config_name)
    return names


def _serving(policies: PolicySet, gateways: set[tuple[str, str]]) -> PolicySet:
    """The policies aimed at one of these Gateways (and every unreadable one, which keeps
    a chain protected as the HTTPListener hook does)."""
    resolved = tuple(
        item
        for item in policies.resolved
        if any((gl.namespace, gl.name) in gateways for gl in targeted(item.policy))
    )
    return PolicySet(resolved, policies.malformed, policies.ignored)


def _aimed_at(item: Resolved, listener: GatewayListener) -> bool:
    """Whether a policy applies on the virtual hosts of this Gateway listener: aimed at the
    whole Gateway, or at this very section."""
    return any(
        (gl.namespace, gl.name) == (listener.namespace, listener.name)
        and gl.section in (None, listener.section)
        for gl in targeted(item.policy)
    )


def _largest(
    policies: PolicySet,
    listeners: Sequence[Any],
    served: Sequence[set[tuple[str, str]]],
    routes: Sequence[Any],
) -> Resolved | None:
    """The policy whose users add the most bytes: its lines, once per listener serving its
    Gateways (a chain each, at least) and once per virtual host of its Gateways. Ties: the
    most recent policy."""
    hosts = [gateway_of(vh) for route in routes for vh in route.virtual_hosts]
    weights = []
    for item in policies.resolved:
        if item.error is not None or not len(item.credentials):
            continue
        aimed = {(gl.namespace, gl.name) for gl in targeted(item.policy)}
        copies = sum(bool(aimed & gateways) for gateways in served) + sum(
            host is not None and _aimed_at(item, host) for host in hosts
        )
        if copies:
            weights.append((table_bytes(item) * copies, item.policy.precedence, item))
    return max(weights, key=lambda entry: entry[:2])[2] if weights else None


def _too_large(victim: Resolved, size: int, limit: int) -> TooLargeError:
    return TooLargeError(
        victim.policy.ref,
        victim.credentials.username_field or "spec",
        f"its {len(victim.credentials)} users were left out of the translation: with them "
        f"the answer's listeners and routes are {size} bytes, over the {limit} bytes the "
        "message limit leaves them",
        "raise --max-message-size on the server and maxMessageSize in Envoy Gateway's "
        "extensionManager together, or spread the users over several policies",
    )
