"""Is this answer right? The users each HTTP manager of the returned listener admits.

An answer is read as Envoy would read it: our basic_auth filter (found by
`compiler.listener.FILTER_NAME`) in every HTTP connection manager, its htpasswd parsed
with Envoy's rules (`compiler.htpasswd.parse_like_envoy`). Then every admitted user must
belong to a policy attached to that chain and carry exactly the hash expected for it;
each store policy's users come all together or not at all; and whether they may or must
be there at this moment is the Timeline's call. Reasons never quote a hash or password.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from envoy.extensions.filters.http.basic_auth.v3 import basic_auth_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from compiler.htpasswd import EnvoyWouldReject, parse_like_envoy
from compiler.listener import FILTER_NAME
from reliability.expect import Allowed, Timeline
from reliability.scenario import Request, SoakPolicy
from server.api import extension_pb2 as api

HCM_TYPE = hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name
PARSED_KEPT = 4096  # distinct answers whose parse is kept (the soak sends few distinct ones)


@dataclass(frozen=True)
class Chain:
    name: str | None
    is_default: bool
    tables: tuple[dict[str, str], ...]  # one user -> hash table per HTTP manager


@dataclass
class Verdict:
    """One answer checked: what was wrong, and which store policies were admitted."""

    wrong: list[str] = field(default_factory=list)
    admitted: int = 0  # store policies whose users were in the answer
    denied: int = 0  # ... and those whose users were not


class Reader:
    """Parses answers; identical answer bytes are parsed once (thread-safe)."""

    def __init__(self) -> None:
        self._kept: dict[bytes, tuple[Chain, ...] | str] = {}
        self._lock = threading.Lock()

    def chains(self, answer: bytes) -> tuple[Chain, ...] | str:
        """The chains with their tables, or why the answer cannot be what Envoy gets."""
        kept = self._kept.get(answer)
        if kept is None:
            kept = _read(answer)
            with self._lock:
                if len(self._kept) >= PARSED_KEPT:
                    self._kept.clear()
                self._kept[answer] = kept
        return kept


def _read(answer: bytes) -> tuple[Chain, ...] | str:
    response = api.PostHTTPListenerModifyResponse.FromString(answer)
    if not response.HasField("listener"):
        return "the answer leaves the listener unchanged (no filter: unprotected)"
    chains = []
    for chain, is_default in _chains(response.listener):
        tables = []
        for network in chain.filters:
            if network.typed_config.type_url.rpartition("/")[2] != HCM_TYPE:
                continue
            manager = hcm_pb2.HttpConnectionManager.FromString(network.typed_config.value)
            ours = [f for f in manager.http_filters if f.name == FILTER_NAME]
            if len(ours) != 1:
                return f"chain {chain.name or '<default>'}: {len(ours)} filters of ours, not 1"
            config = basic_auth_pb2.BasicAuth()
            ours[0].typed_config.Unpack(config)
            try:
                tables.append(parse_like_envoy(config.users.inline_string))
            except EnvoyWouldReject as error:
                return f"chain {chain.name or '<default>'}: Envoy would reject it: {error}"
        if tables:
            chains.append(Chain(chain.name or None, is_default, tuple(tables)))
    if not chains:
        return "no HTTP connection manager in the answer"
    return tuple(chains)


def _chains(listener: Any) -> Iterator[tuple[Any, bool]]:
    for chain in listener.filter_chains:
        yield chain, False
    if listener.HasField("default_filter_chain"):
        yield listener.default_filter_chain, True


def applies(policy: SoakPolicy, chain: Chain, namespace: str, gateway: str) -> bool:
    """docs/policies.md: named chains `<ns>/<gateway>/<section>` take their own policies.

    A default chain, or a chain named otherwise, takes every attached policy.
    """
    parts = (chain.name or "").split("/")
    if chain.is_default or len(parts) != 3 or not all(parts):
        return True
    ns, gw, section = parts
    return (
        policy.namespace == ns == namespace and gw == gateway and policy.section in (None, section)
    )


def check(
    request: Request,
    chains: tuple[Chain, ...] | str,
    timeline: Timeline,
    sent: float,
    answered: float,
    scope: tuple[str, str],
) -> Verdict:
    """Everything wrong with one answer to `request`, sent at `sent`, answered at `answered`."""
    verdict = Verdict()
    if isinstance(chains, str):
        verdict.wrong.append(chains)
        return verdict
    seen: dict[str, bool] = {}  # store policy -> admitted (counted once per answer)
    allowed: dict[str, Allowed] = {}  # store policy -> what the Timeline allows (once a call)
    for chain in chains:
        attached = [p for p in request.policies if applies(p, chain, *scope)]
        owners = {user: p for p in attached for user in p.users}
        where = chain.name or "<default>"
        for table in chain.tables:
            for user, hashed in table.items():
                owner = owners.get(user)
                if owner is None:
                    verdict.wrong.append(f"{where}: a user no attached policy admits")
                elif hashed != owner.users[user]:
                    verdict.wrong.append(f"{where}: a user of {owner.name} with a wrong hash")
            for policy in attached:
                if policy.broken:
                    continue
                there = sum(user in table for user in policy.users)
                if 0 < there < len(policy.users):
                    verdict.wrong.append(f"{where}: only some users of {policy.name}")
                present = there > 0
                if policy.store is not None and policy.name not in allowed:
                    keys = [policy.store] + ([policy.secret] if policy.secret else [])
                    allowed[policy.name] = timeline.allowed(keys, sent, answered)
                problem = _timing(policy, present, allowed.get(policy.name))
                if problem:
                    verdict.wrong.append(f"{where}: {policy.name} {problem}")
                if policy.store is not None:
                    seen[policy.name] = seen.get(policy.name, False) or present
    verdict.admitted = sum(seen.values())
    verdict.denied = len(seen) - verdict.admitted
    return verdict


def _timing(policy: SoakPolicy, present: bool, allowed: Allowed | None) -> str | None:
    if allowed is None:  # plaintext
        return None if present else "(plaintext) left out"
    if present and not allowed.present:
        return "admitted past max-stale or after a revocation (must fail closed)"
    if not present and not allowed.absent:
        return "left out while its value is fresh or within max-stale"
    return None
