"""The seed's story with real processes on loopback: extension server, Envoy, echo backend.

Envoy Gateway's part is played by `GatewayStandIn` (gRPC to the hook) and Envoy's
file-based LDS (its stand-in for the xDS push); everything else is the real thing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from server.demo.echo import EchoBackend
from server.demo.envoy import EnvoyProcess, HttpResponse, free_port, http_get
from server.demo.gateway import ExtensionServerProcess, GatewayStandIn
from server.demo.listeners import eg_http_listener
from server.demo.story import MISSING_CREDENTIALS, basic, seed_policy


@dataclass
class Cluster:
    gateway: GatewayStandIn
    envoy: EnvoyProcess
    listener: Any
    port: int

    def apply(self, *policies: dict[str, Any]) -> None:
        """Envoy Gateway re-translates with these policies attached and pushes to Envoy."""
        self.envoy.publish([self.gateway.translate(self.listener, policies)])

    def get(self, headers: dict[str, str] | None = None) -> HttpResponse:
        return http_get(
            f"http://127.0.0.1:{self.port}/example",
            headers={"Host": "www.example.com", **(headers or {})},
        )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir: Path = tmp_path_factory.mktemp("e2e")
    with (
        ExtensionServerProcess(workdir / "extension-server.log") as server,
        EchoBackend() as backend,
        EnvoyProcess(workdir / "envoy", "backend", backend.port) as envoy,
    ):
        gateway = GatewayStandIn(server.address)
        port = free_port()
        yield Cluster(gateway, envoy, eg_http_listener("default/eg/http", port, "backend"), port)
        gateway.close()


def policy(name: str, username: str, password: str) -> dict[str, Any]:
    body = seed_policy()
    body["metadata"]["name"] = name
    body["spec"].update(username=username, password=password)
    return body


def test_without_a_policy_envoy_answers_401_with_its_own_message(cluster: Cluster) -> None:
    cluster.apply()
    response = cluster.get()
    assert response.status == 401
    assert response.body == MISSING_CREDENTIALS
    assert response.headers["www-authenticate"] == 'Basic realm="http://www.example.com/example"'


def test_seed_policy_admits_user_and_the_backend_sees_the_user_name(cluster: Cluster) -> None:
    cluster.apply(seed_policy())
    response = cluster.get(basic("user", "p@ssw0rd"))
    assert response.status == 200
    echoed = response.json()["headers"]
    assert echoed["X-Example-Ext"] == ["user"]
    assert echoed["Authorization"] == ["Basic dXNlcjpwQHNzdzByZA=="]
    assert cluster.get(basic("user", "wrong")).status == 401
    assert cluster.get().status == 401


def test_added_and_removed_policies_are_honoured_with_envoy_reloading_not_restarting(
    cluster: Cluster,
) -> None:
    cluster.apply(seed_policy())
    pid, updates = cluster.envoy.pid, cluster.envoy.lds_updates()

    cluster.apply(seed_policy(), policy("second", "alice", "s3cret-alice"))
    assert cluster.get(basic("user", "p@ssw0rd")).status == 200
    alice = cluster.get(basic("alice", "s3cret-alice"))
    assert alice.status == 200 and alice.json()["headers"]["X-Example-Ext"] == ["alice"]

    cluster.apply(policy("second", "alice", "s3cret-alice"))
    assert cluster.get(basic("user", "p@ssw0rd")).status == 401
    assert cluster.get(basic("alice", "s3cret-alice")).status == 200

    assert cluster.envoy.pid == pid
    assert cluster.envoy.restart_epoch() == 0
    assert cluster.envoy.lds_updates() == updates + 2


def test_a_broken_policy_next_to_a_good_one_leaves_the_good_one_working(cluster: Cluster) -> None:
    broken = policy("broken", "a:b", "x")
    cluster.apply(broken, seed_policy())
    assert cluster.get(basic("user", "p@ssw0rd")).status == 200
    assert cluster.get(basic("a", "b:x")).status == 401
