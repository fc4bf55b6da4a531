"""Envoy Gateway's route configurations through the Translation hook, accepted by every Envoy.

The shared corpus holds, under the same file names, the listeners (eg-listeners/) and the
route configurations (eg-routes/) Envoy Gateway's translator emits for its test scenarios.
Each listener, with the route configurations its managers read by RDS, goes through the
product's `compile_translation` as PostTranslateModify runs it; the answer's route
configurations are then put inline (`route_config` instead of `rds`, with
`validate_clusters: false` as for a table served by RDS). Every listener an Envoy release
accepts inline before must still be accepted after: with no policy (every virtual host
admits nobody), and with two (the first two Gateways the file's virtual hosts name, else
two that none does), one exempting `/healthz` and hiding credentials, the other exempting
`/.well-known/ready` for GET and HEAD: our filter wrapped for each Gateway's exemptions,
the username guard, the credential remover, and every virtual host's users.

Also here: Envoy Gateway's metadata reads the same through `gateway_of` as it is written,
and the path normalisation the behaviour tests call Envoy Gateway's is the one its
listeners carry.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import json_format

from backends import CredentialResolver
from compiler.model import CompileOptions
from compiler.pipeline import load_policies
from compiler.translation import compile_translation
from compiler.virtual_hosts import GatewayListener, gateway_of
from server.envoy_json import register_envoy_types
from tests.support.builders import policy
from tests.support.corpus import require_corpus, unavailable
from tests.support.envoys import EnvoyRelease, every_envoy, validate_with
from tests.support.request_control import NORMALISATION, edit_managers
from tests.support.validate import Listener, load_corpus_listeners

FALLBACK = [GatewayListener("team-a", "gw-a", "http"), GatewayListener("team-b", "gw-b", "http")]


@dataclass
class Inlined:
    """One corpus listener with its route configurations inline, and as Envoy Gateway
    sends it to the hook (reading them by RDS)."""

    ident: str
    listener: Listener
    routes: list[Any]  # the RouteConfigurations inlined, in manager order
    sent: Listener


def routes_corpus() -> Path:
    routes = require_corpus().parent / "eg-routes"
    if not routes.is_dir():
        unavailable(f"route corpus not found at {routes} (it sits next to the listener corpus)")
    return routes


def load_routes(path: Path) -> dict[str, Any]:
    """The file's route configurations by name; those with a type or field newer than
    xds-protos knows are left out (their listeners then keep `rds`)."""
    register_envoy_types()
    found = {}
    for data in yaml.safe_load(path.read_text()) or []:
        routes = route_pb2.RouteConfiguration()
        try:
            json_format.ParseDict(data, routes)
        except json_format.ParseError:
            continue
        found[routes.name] = routes
    return found


@pytest.fixture(scope="module")
def inlined() -> list[Inlined]:
    return inline_corpus()


def inline_corpus() -> list[Inlined]:
    """Every corpus listener whose managers fetch a route configuration the routes file of
    the same name holds, with it inline."""
    directory = routes_corpus()
    listeners_by_file = collections.defaultdict(list)
    for ident, listener in load_corpus_listeners(require_corpus()):
        if not isinstance(listener, str):
            listeners_by_file[ident.partition("#")[0]].append((ident, listener))
    result = []
    for stem, listeners in sorted(listeners_by_file.items()):
        path = directory / f"{stem}.yaml"
        if not path.is_file():
            continue
        by_name = load_routes(path)
        for ident, listener in listeners:
            sent = type(listener)()
            sent.CopyFrom(listener)
            used: list[Any] = []
            edit_managers(listener, inline_from(by_name, used))
            if used:
                result.append(Inlined(ident, listener, used, sent))
    return result


def inline_from(by_name: dict[str, Any], used: list[Any] | None = None) -> Callable[[Any], None]:
    """Put the route configuration a manager reads by RDS inside it, when `by_name` has it
    (and note it in `used`)."""

    def inline(manager: Any) -> None:
        if manager.HasField("rds") and manager.rds.route_config_name in by_name:
            manager.route_config.CopyFrom(by_name[manager.rds.route_config_name])
            if not manager.route_config.HasField("validate_clusters"):
                # what Envoy assumes for a route table served by RDS: the clusters arrive
                # by CDS, they are not checked when the table loads
                manager.route_config.validate_clusters.value = False
            if used is not None:
                used.append(manager.route_config)

    return inline


def gateways_named(item: Inlined) -> list[GatewayListener]:
    named = {gateway_of(host) for routes in item.routes for host in routes.virtual_hosts}
    found = sorted((g for g in named if g is not None), key=GatewayListener.sort_key)
    return found[:2] if len(found) >= 2 else FALLBACK


def two_policies(item: Inlined) -> list[bytes]:
    """alice on the first Gateway listener (exempting /healthz, hiding credentials), bob
    on the whole second Gateway (exempting /.well-known/ready for GET and HEAD)."""
    first, second = gateways_named(item)
    section = {"sectionName": first.section} if first.section else {}
    alice = policy(
        "alice", "alice", "alice-corpus", namespace=first.namespace,
        targets=[{"kind": "Gateway", "name": first.name, **section}],
        exemptions=[{"path": {"type": "PathPrefix", "value": "/healthz"}}],
        hideCredentials=True,
    )  # fmt: skip
    bob = policy(
        "bob", "bob", "bob-corpus", namespace=second.namespace,
        targets=[{"kind": "Gateway", "name": second.name}],
        exemptions=[{"path": {"type": "Exact", "value": "/.well-known/ready"},
                     "methods": ["GET", "HEAD"]}],
    )  # fmt: skip
    return [alice, bob]


def with_translation_hook(item: Inlined, two_gateways: bool) -> Listener:
    """The listener as the Translation hook answers it, with the answer's route
    configurations inline (see the module docstring)."""
    resources = two_policies(item) if two_gateways else []
    policies = load_policies(resources, CredentialResolver())
    result = compile_translation([item.sent], item.routes, policies, CompileOptions())
    (compiled,) = result.listeners
    assert not compiled.errors, (item.ident, compiled.errors)
    return edit_managers(compiled.listener, inline_from({r.name: r for r in result.routes}))


@every_envoy
def test_every_route_configuration_envoy_accepts_inline_it_still_accepts_with_users_per_host(
    envoy: EnvoyRelease, tmp_path: Path, inlined: list[Inlined]
) -> None:
    before = validate_with(envoy, [item.listener for item in inlined], tmp_path / "before")
    accepted = [item for item, error in zip(inlined, before, strict=True) if error is None]
    after = [with_translation_hook(item, two) for two in (False, True) for item in accepted]
    results = validate_with(envoy, after, tmp_path / "after")

    rejected = [
        f"{item.ident} ({'two Gateways' if index >= len(accepted) else 'no policy'}): {error}"
        for index, (item, error) in enumerate(zip(accepted * 2, results, strict=True))
        if error is not None
    ]
    assert not rejected, "\n".join(rejected)
    hosts = sum(len(routes.virtual_hosts) for item in accepted for routes in item.routes)
    assert len(accepted) >= 250 and hosts >= 300, (len(inlined), len(accepted), hosts)
    print(
        f"\nEnvoy {envoy.version}: {len(accepted)} of {len(inlined)} listeners accepted with "
        f"their routes inline ({hosts} virtual hosts); after the Translation hook, with 0 "
        f"and 2 policies: {2 * len(accepted) - len(rejected)} of {2 * len(accepted)}"
    )


def test_envoy_gateways_metadata_reads_as_it_is_written() -> None:
    written = collections.Counter()
    for path in sorted(routes_corpus().glob("*.yaml")):
        for routes in load_routes(path).values():
            for host in routes.virtual_hosts:
                data = json_format.MessageToDict(host.metadata).get("filterMetadata", {})
                origins = data.get("envoy-gateway", {}).get("resources", [])
                expected = None
                if origins and origins[0].get("kind") == "Gateway":
                    origin = origins[0]
                    expected = GatewayListener(
                        origin["namespace"], origin["name"], origin.get("sectionName")
                    )
                assert gateway_of(host) == expected, host.name
                written["Gateway" if expected else "none"] += 1
    assert written["Gateway"] >= 50, written


def test_the_normalisation_called_envoy_gateways_is_what_its_listeners_carry() -> None:
    settings: collections.Counter[tuple[Any, ...]] = collections.Counter()
    for _ident, listener in load_corpus_listeners(require_corpus()):
        if isinstance(listener, str):
            continue

        def record(manager: Any) -> None:
            escaped = hcm_pb2.HttpConnectionManager.PathWithEscapedSlashesAction.Name(
                manager.path_with_escaped_slashes_action
            )
            normalize = manager.normalize_path.value if manager.HasField("normalize_path") else None
            settings[(normalize, manager.merge_slashes, escaped)] += 1

        edit_managers(listener, record)
    eg = NORMALISATION["eg"]
    most_common, count = settings.most_common(1)[0]
    assert most_common == (
        eg["normalize_path"], eg["merge_slashes"], eg["path_with_escaped_slashes_action"]
    )  # fmt: skip
    assert count > sum(settings.values()) * 3 // 4, settings
