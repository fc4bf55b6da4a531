"""Two header filters that travel with our basic_auth filter, and where they go.

**Hidden credentials** (`hide_credentials_filter`): after our basic_auth filter admitted a
request, its `Authorization: Basic ...` header is removed, so the backend never sees the
password; the username header basic_auth wrote stays. Envoy 1.36 to 1.40 have no field
for this in basic_auth itself (`BasicAuth` has `users`, `forward_username_header`,
`authentication_header` only), and a route's `request_headers_to_remove` would also strip
a Bearer token from exempt requests and is not ours to change in the listener hook. So it
is Envoy's `header_mutation` filter (`envoy.extensions.filters.http.header_mutation.v3`,
https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_filters/header_mutation_filter)
removing `authorization`, wrapped (compiler/matching.py `skip_when`) so that Envoy skips
the removal when

- the header does not start with `Basic ` (Envoy's own basic_auth test, case-sensitive):
  any other scheme, a Bearer token a later JWT filter needs, is left alone;
- the request is exempt (the exemptions' predicate): basic_auth checked nothing there;
- with per-Gateway scope, the virtual host belongs to a Gateway that did not ask for it.

On a non-exempt request the header can only be valid Basic credentials by then: basic_auth
answers 401 to anything else, and Envoy folds repeated `Authorization` headers into one
value that is then not valid Basic credentials.

**The username guard** (`username_guard_filter`): basic_auth sets the username header
(`forward_username_header`) on success, replacing what the client sent; a request it
skips (an exempt one) would keep a client's own `X-Example-Ext: admin`. The guard removes
that header from every request before basic_auth runs, so the header the backend sees
always comes from a credential check. Needed only where exemptions exist.

**Placement** (`place_companions`): Envoy Gateway ranks header_mutation before
basic_auth, so these cannot be left to the ranking: the guard goes right before our
basic_auth filter and the removal right after it. Both names start with Envoy Gateway's
header_mutation prefix followed by `/extension-server/`, which no Envoy Gateway filter
has (its own is plain `envoy.filters.http.header_mutation`), so they are found, replaced
or removed by name and Envoy Gateway's own filters are never touched. Call it after
placing our basic_auth filter (compiler/filters.py `place_filter`, which moves ours past
the removal when re-placing it); the pair of calls applied to their own output changes
nothing.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2,
)

from compiler.filters import FILTER_NAME, detached
from compiler.matching import any_of, header_is, negate, skip_when
from compiler.model import GatewayListener
from compiler.virtual_hosts import on_virtual_host_of

_PREFIX = "envoy.filters.http.header_mutation/extension-server/"
HIDE_FILTER_NAME = _PREFIX + "hide-credentials"
GUARD_FILTER_NAME = _PREFIX + "username-guard"
COMPANION_NAMES = frozenset({HIDE_FILTER_NAME, GUARD_FILTER_NAME})
BASIC_SCHEME = "Basic "  # what Envoy's basic_auth requires, case-sensitively


def hide_credentials_filter(
    exempt: Any | None = None, only_on: Collection[GatewayListener] | None = None
) -> Any:
    """The filter that removes `Authorization: Basic ...` once basic_auth admitted a request.

    `exempt`: the exemptions' predicate (compiler/exemptions.py `exempt_predicate`), the
    same one our basic_auth filter skips for. `only_on`: the Gateway listeners whose
    policies ask for it (None: the whole filter chain). An empty `only_on` is refused:
    leave the filter out instead.
    """
    if only_on is not None and not only_on:
        raise ValueError("only_on names no Gateway listener: leave the filter out instead")
    skip = [negate(header_is("authorization", prefix=BASIC_SCHEME))]
    if exempt is not None:
        skip.append(exempt)
    if only_on is not None:
        skip.append(negate(on_virtual_host_of(only_on)))
    return skip_when(_removing(HIDE_FILTER_NAME, "authorization"), any_of(skip))


def username_guard_filter(forward_username_header: str) -> Any:
    """The filter that removes the client's own username header before basic_auth runs."""
    return _removing(GUARD_FILTER_NAME, forward_username_header)


def place_companions(filters: Any, *, guard: Any | None = None, hide: Any | None = None) -> None:
    """Put `guard` right before our basic_auth filter and `hide` right after it, in the
    repeated field `filters`, replacing earlier ones; a companion that is None is removed.

    Without our basic_auth filter in the list, both are removed: neither means anything
    alone.
    """
    kept = [detached(f) for f in filters if f.name not in COMPANION_NAMES]
    names = [f.name for f in kept]
    if FILTER_NAME in names:
        at = names.index(FILTER_NAME)
        kept[at : at + 1] = [f for f in (guard, kept[at], hide) if f is not None]
    del filters[:]
    filters.extend(kept)


def _removing(name: str, header: str) -> Any:
    config = header_mutation_pb2.HeaderMutation()
    config.mutations.request_mutations.append(mutation_rules_pb2.HeaderMutation(remove=header))
    http_filter = http_connection_manager_pb2.HttpFilter(name=name)
    http_filter.typed_config.Pack(config, deterministic=True)
    return http_filter
