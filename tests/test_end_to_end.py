"""The seed's story with real processes on loopback: extension server, Envoy, echo backend.

Envoy Gateway's part is played by `GatewayStandIn` (gRPC to the hook) and Envoy's
file-based LDS (its stand-in for the xDS push); everything else is the real thing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from server.demo.stack import LocalGateway, local_gateway
from server.demo.story import MISSING_CREDENTIALS, basic, seed_policy


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalGateway]:
    with local_gateway(tmp_path_factory.mktemp("e2e")) as gateway:
        yield gateway


def policy(name: str, username: str, password: str) -> dict[str, Any]:
    body = seed_policy()
    body["metadata"]["name"] = name
    body["spec"].update(username=username, password=password)
    return body


def test_without_a_policy_envoy_answers_401_with_its_own_message(cluster: LocalGateway) -> None:
    cluster.apply()
    response = cluster.get()
    assert response.status == 401
    assert response.body == MISSING_CREDENTIALS
    assert response.headers["www-authenticate"] == 'Basic realm="http://www.example.com/example"'


def test_seed_policy_admits_user_and_the_backend_sees_the_user_name(cluster: LocalGateway) -> None:
    cluster.apply([seed_policy()])
    response = cluster.get(basic("user", "p@ssw0rd"))
    assert response.status == 200
    echoed = response.json()["headers"]
    assert echoed["X-Example-Ext"] == ["user"]
    assert echoed["Authorization"] == ["Basic dXNlcjpwQHNzdzByZA=="]
    assert cluster.get(basic("user", "wrong")).status == 401
    assert cluster.get().status == 401


def test_added_and_removed_policies_are_honoured_with_envoy_reloading_not_restarting(
    cluster: LocalGateway,
) -> None:
    cluster.apply([seed_policy()])
    pid, updates = cluster.envoy.pid, cluster.envoy.lds_updates()

    cluster.apply([seed_policy(), policy("second", "alice", "s3cret-alice")])
    assert cluster.get(basic("user", "p@ssw0rd")).status == 200
    alice = cluster.get(basic("alice", "s3cret-alice"))
    assert alice.status == 200 and alice.json()["headers"]["X-Example-Ext"] == ["alice"]

    cluster.apply([policy("second", "alice", "s3cret-alice")])
    assert cluster.get(basic("user", "p@ssw0rd")).status == 401
    assert cluster.get(basic("alice", "s3cret-alice")).status == 200

    assert cluster.envoy.pid == pid
    assert cluster.envoy.restart_epoch() == 0
    assert cluster.envoy.lds_updates() == updates + 2


def test_a_broken_policy_next_to_a_good_one_leaves_the_good_one_working(
    cluster: LocalGateway,
) -> None:
    broken = policy("broken", "a:b", "x")
    cluster.apply([broken, seed_policy()])
    assert cluster.get(basic("user", "p@ssw0rd")).status == 200
    assert cluster.get(basic("a", "b:x")).status == 401
