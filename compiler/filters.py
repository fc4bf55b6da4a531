"""Where the basic_auth filter goes in an HTTP filter list: Envoy Gateway's own order.

Envoy Gateway ranks the HTTP filters it generates by type (see docs/design.md). Putting
ours where it would put a basic_auth filter keeps health checks and CORS preflights
working (they run before authentication) and authenticates before authorization,
rate limits and the router.
"""

from __future__ import annotations

from typing import Any

# Envoy Gateway's order of HTTP filter types; the router is always last.
FILTER_ORDER = (
    "custom_response",
    "health_check",
    "fault",
    "cors",
    "csrf",
    "header_mutation",
    "ext_authz",
    "api_key_auth",
    "basic_auth",
    "oauth2",
    "jwt_authn",
    "stateful_session",
    "buffer",
    "lua",
    "ext_proc",
    "wasm",
    "dynamic_modules",
    "geoip",
    "rbac",
    "local_ratelimit",
    "ratelimit",
    "bandwidth_limit",
    "grpc_web",
    "grpc_stats",
    "credential_injector",
    "compressor",
    "dynamic_forward_proxy",
    "router",
)
_RANK = {kind: rank for rank, kind in enumerate(FILTER_ORDER)}
# Our filter's name: Envoy Gateway's basic_auth prefix (so its ordering knows the type)
# followed by a suffix no SecurityPolicy filter can have.
FILTER_NAME = "envoy.filters.http.basic_auth/extension-server"
BASIC_AUTH_RANK = _RANK["basic_auth"]

_TYPE_PREFIX = "envoy.extensions.filters.http."
_NAME_PREFIX = "envoy.filters.http."


def filter_kind(http_filter: Any) -> str | None:
    """The filter's type (`cors`, `router`, ...): from its typed_config, else from its name."""
    if http_filter.HasField("typed_config"):
        message = http_filter.typed_config.type_url.rpartition("/")[2]
        if message.startswith(_TYPE_PREFIX):
            return str(message[len(_TYPE_PREFIX) :].partition(".")[0])
    name = str(http_filter.name)
    if name.startswith(_NAME_PREFIX):
        return name[len(_NAME_PREFIX) :].partition("/")[0]
    return None


def insertion_index(filters: Any, name: str) -> int:
    """Index at which a basic_auth filter called `name` belongs in `filters`.

    Before the first filter Envoy Gateway ranks after basic_auth (ties broken by name,
    as Envoy Gateway does); filters of unknown type do not move it. Without any such
    filter, at the end.
    """
    for index, http_filter in enumerate(filters):
        rank = _RANK.get(filter_kind(http_filter) or "")
        if rank is None:
            continue
        if rank > BASIC_AUTH_RANK or (rank == BASIC_AUTH_RANK and http_filter.name > name):
            return index
    return len(filters)


def place_filter(filters: Any, new_filter: Any) -> None:
    """Put `new_filter` into the repeated field `filters`, replacing any filter of its name."""
    kept = [detached(f) for f in filters if f.name != new_filter.name]
    kept.insert(insertion_index(kept, new_filter.name), new_filter)
    del filters[:]
    filters.extend(kept)


def detached(message: Any) -> Any:
    """A copy of a message held in a repeated field, so that clearing the field cannot
    touch it."""
    clone = type(message)()
    clone.CopyFrom(message)
    return clone
