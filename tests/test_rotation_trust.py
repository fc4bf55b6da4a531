"""The rotation watcher acts on what the Kubernetes API server holds, not on what callers send.

Whoever can reach the hook's port can send any object as an attached policy. These tests
run the real `extension-server serve` with its watcher on, against the Vault and
Kubernetes API stand-ins (tests/support/vault.py, tests/support/kube.py: neither can be
installed here), call its hook as an attacker would, and look at what reaches Vault and
the API server: which secrets are polled, how many requests a poll makes, and which
policies are patched.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from server.demo.envoy import free_port
from server.demo.gateway import GatewayStandIn
from tests.support.builders import http_listener
from tests.support.kube import KubeStandIn
from tests.support.secrets import remember
from tests.support.vault import VaultStandIn

TOKEN = "hvs.rotation-trust-token"
POLL = 0.3  # --rotation-poll-interval
LEASE = "/apis/coordination.k8s.io/v1/namespaces/default/leases/extension-server-rotation"
METADATA = "/v1/secret/metadata/gateways/"
GIVE_UP_AFTER = 30.0  # a bound on the waiting loops, not a performance assertion


def vault_policy(namespace: str, name: str, secret: str, **spec: Any) -> dict[str, Any]:
    """A policy reading its password from Vault, `secret` under `namespace`'s own path."""
    path = f"secret/data/gateways/{namespace}/{secret}"
    return {
        "apiVersion": "example.extensions.io/v1alpha1",
        "kind": "ListenerContextExample",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "eg"}],
            "username": name,
            "passwordFrom": {"vault": {"path": path, "key": "password"}},
            **spec,
        },
    }


def plain_policy(namespace: str, name: str, password: str) -> dict[str, Any]:
    remember(password)
    policy = vault_policy(namespace, name, "unused")
    del policy["spec"]["passwordFrom"]
    policy["spec"]["password"] = password
    return policy


@dataclass
class Cluster:
    vault: VaultStandIn
    kube: KubeStandIn
    server: Any
    gateway: GatewayStandIn
    metrics_port: int

    def call_hook(self, *policies: dict[str, Any]) -> None:
        """Envoy Gateway's call, or an attacker's: these objects as attached policies."""
        self.gateway.translate(http_listener(), list(policies))

    def polls(self, count: int) -> None:
        """Wait until the watcher has polled `count` more times (it renews its Lease each poll)."""
        wanted = self.kube.count("PUT", LEASE) + count
        started = time.monotonic()
        while self.kube.count("PUT", LEASE) < wanted:
            assert time.monotonic() - started < GIVE_UP_AFTER, self.server.output
            time.sleep(0.05)

    def metadata_requests_per_poll(self, polls: int = 3) -> float:
        """Vault version checks per poll, over `polls` polls."""
        self.polls(1)
        before = self.vault.count(METADATA)
        self.polls(polls)
        return (self.vault.count(METADATA) - before) / polls

    def polled(self, polls: int = 2) -> set[str]:
        """The secrets (Vault paths) version-checked during the next `polls` polls."""
        self.polls(1)
        before = len(self.vault.requests)
        self.polls(polls)
        return {
            path.removeprefix(METADATA)
            for _, path, _ in self.vault.requests[before:]
            if path.startswith(METADATA)
        }

    def metric(self, name: str) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        assert match, f"no {name} in /metrics"
        return float(match.group(1))


@pytest.fixture
def start_cluster(served: Any, tmp_path: Path) -> Iterator[Any]:
    """Vault, the API server and `serve` with its watcher on; `env` adds to its environment."""
    remember(TOKEN)
    token_file = tmp_path / "vault-token"
    token_file.write_text(TOKEN)
    opened: list[Any] = []

    def start(env: dict[str, str] | None = None) -> Cluster:
        vault = VaultStandIn().start()
        kube = KubeStandIn().start()
        opened.extend([vault, kube])
        vault.add_token(TOKEN)
        port, metrics_port = free_port(), free_port()
        args = [
            "--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics_port),
            "--vault-addr", vault.url, "--vault-token-file", str(token_file),
            "--secret-cache-ttl", "300s", "--rotation-poll-interval", f"{POLL:g}s",
            "--rotation-lease-namespace", "default",
        ]  # fmt: skip
        environment = {
            "KUBECONFIG": str(kube.kubeconfig(tmp_path / "kubeconfig")),
            # Through the environment, so that a server without this setting runs too.
            "EXTENSION_SERVER_ROTATION_WATCHER": "on",
            "EXTENSION_SERVER_METRICS_PORT": str(metrics_port),
            **(env or {}),
        }
        server = served(args, port=port, env=environment)
        gateway = GatewayStandIn(f"127.0.0.1:{port}")
        opened.append(gateway)
        return Cluster(vault, kube, server, gateway, metrics_port)

    yield start
    for thing in reversed(opened):
        thing.close() if isinstance(thing, GatewayStandIn) else thing.stop()


def put_secret(vault: VaultStandIn, namespace: str, secret: str, password: str) -> None:
    remember(password)
    vault.put_v2(f"gateways/{namespace}/{secret}", {"password": password})


def test_a_flood_of_made_up_policies_is_neither_watched_nor_polled(start_cluster: Any) -> None:
    cluster = start_cluster()
    put_secret(cluster.vault, "team-a", "real", "pw-trust-real-1")
    real = cluster.kube.put_policy(vault_policy("team-a", "real", "real"))
    made_up = [vault_policy(f"ns-{n}", "forged", "x") for n in range(300)]
    cluster.call_hook(real, *made_up)  # each passes the tenancy guard of its own namespace
    per_poll = cluster.metadata_requests_per_poll()
    print(f"\n1 real and 300 made-up policies in a hook call: {per_poll:g} store requests a poll")
    assert per_poll == 1
    watched = cluster.metric("extension_server_rotation_watched_policies")
    secrets = cluster.metric("extension_server_rotation_watched_secrets")
    print(f"registry: {watched:g} policy watched, {secrets:g} secret")
    assert watched == 1 and secrets == 1
    # A made-up secret that appears changes nothing either: nothing to patch.
    put_secret(cluster.vault, "ns-0", "x", "pw-trust-made-up")
    cluster.polls(3)
    assert cluster.kube.patches == []


def test_a_forged_copy_can_neither_make_the_server_patch_a_policy_nor_stop_its_rotation(
    start_cluster: Any,
) -> None:
    cluster = start_cluster()
    # team-b/web keeps its password in the policy; team-a/real reads Vault.
    cluster.kube.put_policy(plain_policy("team-b", "web", "pw-trust-plain"))
    put_secret(cluster.vault, "team-a", "real", "pw-trust-real-1")
    real = cluster.kube.put_policy(vault_policy("team-a", "real", "real"))
    cluster.call_hook(real)
    cluster.polls(2)
    # Forged copies: team-b/web naming a store it does not use, team-a/real without its store.
    cluster.call_hook(
        vault_policy("team-b", "web", "x"), plain_policy("team-a", "real", "pw-trust-forged")
    )
    cluster.polls(2)
    put_secret(cluster.vault, "team-b", "x", "pw-trust-appears")  # what the forgery names
    put_secret(cluster.vault, "team-a", "real", "pw-trust-real-2")  # a real rotation
    started = time.monotonic()
    while not cluster.kube.patches:
        assert time.monotonic() - started < GIVE_UP_AFTER, "the real rotation was not patched"
        time.sleep(0.05)
    cluster.polls(3)
    patched = [path.rsplit("/", 3)[-3:] for path, _ in cluster.kube.patches]
    assert patched == [["team-a", "listenercontextexamples", "real"]]
    web = cluster.kube.get("ListenerContextExample", "team-b", "web")
    assert web is not None and "credentialsRevision" not in web["spec"]


def test_deleted_policies_and_references_a_policy_no_longer_has_are_forgotten(
    start_cluster: Any,
) -> None:
    cluster = start_cluster()
    for secret in ("s1", "s2", "s3"):
        put_secret(cluster.vault, "team-a", secret, f"pw-trust-{secret}")
    one = cluster.kube.put_policy(vault_policy("team-a", "one", "s1"))
    two = cluster.kube.put_policy(vault_policy("team-a", "two", "s2"))
    cluster.call_hook(one, two)
    assert cluster.polled() == {"team-a/s1", "team-a/s2"}
    cluster.kube.delete("ListenerContextExample", "team-a", "one")
    cluster.kube.put_policy(vault_policy("team-a", "two", "s3"))  # now reads s3
    cluster.polls(1)
    assert cluster.polled() == {"team-a/s3"}


def test_the_watched_policies_are_bounded_by_a_setting_with_a_metric_and_a_log_line(
    start_cluster: Any,
) -> None:
    cluster = start_cluster({"EXTENSION_SERVER_ROTATION_MAX_POLICIES": "5"})
    stored = []
    for n in range(20):
        put_secret(cluster.vault, "team-a", f"s{n:02}", f"pw-trust-limit-{n}")
        stored.append(cluster.kube.put_policy(vault_policy("team-a", f"p{n:02}", f"s{n:02}")))
    cluster.call_hook(*stored)
    per_poll = cluster.metadata_requests_per_poll()
    print(f"\n20 policies on 20 secrets, at most 5 watched: {per_poll:g} store requests per poll")
    assert per_poll == 5
    assert cluster.metric("extension_server_rotation_watched_policies") == 5
    assert cluster.metric("extension_server_rotation_unwatched_policies") == 15
    lines = [line for line in cluster.server.log_lines if "rotation.limit_reached" in line]
    assert len(lines) == 1, cluster.server.output  # when it is reached, not at every poll
    assert "max_policies=5" in lines[0] and "unwatched=15" in lines[0]
    assert "team-a/p05,team-a/p06,team-a/p07,...(+12 more)" in lines[0]


def test_a_revision_on_a_policy_the_tenancy_guard_refuses_evicts_nothing(
    served: Any, tmp_path: Path
) -> None:
    """team-b's policy names team-a's secret, with a new credentialsRevision at each call:
    refused, and team-a's cached secret is not fetched again."""
    remember(TOKEN)
    token_file = tmp_path / "vault-token"
    token_file.write_text(TOKEN)
    with VaultStandIn() as vault:
        vault.add_token(TOKEN)
        put_secret(vault, "team-a", "real", "pw-trust-evict")
        port = free_port()
        args = [
            "--host", "127.0.0.1", "--port", str(port), "--vault-addr", vault.url,
            "--vault-token-file", str(token_file), "--secret-cache-ttl", "300s",
        ]  # fmt: skip
        served(args, port=port)
        gateway = GatewayStandIn(f"127.0.0.1:{port}")
        try:
            real = vault_policy("team-a", "real", "real")
            gateway.translate(http_listener(), [real])
            reads = vault.count("/v1/secret/data/gateways/team-a/real")
            for revision in ("r1", "r2", "r3"):
                stealing = vault_policy("team-b", "steal", "real", credentialsRevision=revision)
                path = "secret/data/gateways/team-a/real"
                stealing["spec"]["passwordFrom"]["vault"]["path"] = path
                gateway.translate(http_listener(), [stealing])
                gateway.translate(http_listener(), [real])
            assert vault.count("/v1/secret/data/gateways/team-a/real") == reads
        finally:
            gateway.close()
