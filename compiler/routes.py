"""The Translation hook's per-virtual-host users: each Gateway's users on its own routes.

With `mergeGateways`, Gateways of different namespaces share one plain-HTTP filter chain,
so the table of our listener-level basic_auth filter cannot be one Gateway's. The route
configuration tells their virtual hosts apart (compiler/virtual_hosts.py `gateway_of`),
and Envoy lets a virtual host override a filter's config: `with_gateway_users` sets
`typed_per_filter_config[FILTER_NAME]` on every virtual host to
`BasicAuthPerRoute{users}` holding the table of that virtual host's own Gateway listener.

- Envoy looks the override up by the filter's name in the connection manager, FILTER_NAME,
  also when our filter is wrapped in an ExtensionWithMatcher for exemptions (the wrapper
  keeps the name, and its own per-route lookup under that name finds no
  ExtensionWithMatcherPerRoute there, so the listener-level matcher stays in force).
  Checked on Envoy 1.36 to 1.40 (tests/test_request_control_envoy.py).
- A virtual host whose Gateway listener has no policy gets a table with no user line:
  it admits nobody (Envoy rejects an empty `users`, so that table is a comment), as a
  chain with no policy does. With `unprotectedListeners: passthrough` (`open_unprotected`)
  our filter is disabled there instead (`FilterConfig.disabled`, Envoy 1.27 and later),
  as a chain with no policy is left unchanged.
- A virtual host without Envoy Gateway's metadata cannot be told apart: it admits nobody,
  in either mode (Envoy Gateway v1.6 and later write it on every virtual host).
- A route's own `typed_per_filter_config` would win over the virtual host's; Envoy
  Gateway never writes our filter's name there, and routes are left as they are.
- Everything else in the route configuration is kept as it was, unknown fields included;
  applied to its own output it changes nothing.

Exemptions need no per-virtual-host config: the listener-level matcher already limits
each Gateway's exemptions to its own virtual hosts (compiler/exemptions.py `per_gateway`).
Per-virtual-host matchers (ExtensionWithMatcherPerRoute) would need the same
`typed_per_filter_config` key as the users, which holds one config only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.basic_auth.v3 import basic_auth_pb2

from compiler.filters import FILTER_NAME
from compiler.model import GatewayListener
from compiler.virtual_hosts import gateway_of

# Non-empty (Envoy rejects an empty DataSource) and without a user line.
NOBODY = "# no user: no policy applies to this virtual host's Gateway listener\n"

# A Gateway listener -> its htpasswd table, or None when no policy applies to it.
TableFor = Callable[[GatewayListener], str | None]


def with_gateway_users(
    route_configuration: Any, table_for: TableFor, open_unprotected: bool = False
) -> Any:
    """A copy of `route_configuration` where each virtual host admits the users of its
    own Gateway listener only (and, with `open_unprotected`, everyone on the virtual
    hosts of a Gateway listener no policy applies to)."""
    result = route_pb2.RouteConfiguration()
    result.CopyFrom(route_configuration)
    for virtual_host in result.virtual_hosts:
        listener = gateway_of(virtual_host)
        table = table_for(listener) if listener is not None else None
        config: Any = per_route_users(table or NOBODY)
        if listener is not None and table is None and open_unprotected:
            config = route_components_pb2.FilterConfig(disabled=True)
        virtual_host.typed_per_filter_config[FILTER_NAME].Pack(config, deterministic=True)
    return result


def per_route_users(htpasswd: str) -> Any:
    config = basic_auth_pb2.BasicAuthPerRoute()
    config.users.inline_string = htpasswd
    return config
