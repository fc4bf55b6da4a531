"""A local run never touches a cluster unless asked.

A user with a store configured and a kubeconfig (pointing at the Kubernetes API stand-in
of tests/support/kube.py here) runs `extension-server serve`: the rotation watcher stays
off, and the API server sees no request. In a pod (the kubelet's KUBERNETES_SERVICE_*
variables) it runs, as it does anywhere with `--rotation-watcher on`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.demo.envoy import free_port
from tests.support.kube import KubeStandIn
from tests.support.secrets import remember
from tests.support.vault import VaultStandIn

TOKEN = "hvs.local-run-token"


@pytest.fixture
def user(tmp_path: Path) -> Iterator[tuple[list[str], dict[str, str], KubeStandIn]]:
    """A user's shell: Vault configured, a kubeconfig whose current context is a cluster."""
    remember(TOKEN)
    token_file = tmp_path / "vault-token"
    token_file.write_text(TOKEN)
    with VaultStandIn() as vault, KubeStandIn() as kube:
        vault.add_token(TOKEN)
        args = [
            "--vault-addr", vault.url, "--vault-token-file", str(token_file),
            "--rotation-poll-interval", "0.1s", "--rotation-lease-namespace", "default",
        ]  # fmt: skip
        yield args, {"KUBECONFIG": str(kube.kubeconfig(tmp_path / "kubeconfig"))}, kube


def start(served: Any, args: list[str], env: dict[str, str]) -> Any:
    port = free_port()
    return served(["--host", "127.0.0.1", "--port", str(port), *args], port=port, env=env)


def test_a_local_serve_leaves_the_users_cluster_alone(served: Any, user: Any) -> None:
    args, env, kube = user
    server = start(served, args, env)
    time.sleep(1.0)  # ten poll intervals, had the watcher run
    assert kube.requests == []
    assert "rotation_watcher=off" in server.output
    assert "event=rotation.disabled" in server.output
    assert "--rotation-watcher on" in server.output  # the line says how to ask for it


@pytest.mark.parametrize(
    "where",
    [{"EXTENSION_SERVER_ROTATION_WATCHER": "on"}, {"KUBERNETES_SERVICE_HOST": "127.0.0.1"}],
    ids=["asked-for", "in-a-pod"],
)
def test_the_watcher_runs_when_asked_for_or_in_a_pod(
    served: Any, user: Any, where: dict[str, str]
) -> None:
    """In a pod the kubelet sets KUBERNETES_SERVICE_HOST and _PORT; the service-account
    files are not on this machine, so the client falls back to the kubeconfig."""
    args, env, kube = user
    pod = {"KUBERNETES_SERVICE_PORT": "1"} if "KUBERNETES_SERVICE_HOST" in where else {}
    server = start(served, args, {**env, **where, **pod})
    server.wait_for_log("rotation.leader")
    assert "rotation_watcher=on" in server.output
    assert kube.get("Lease", "default", "extension-server-rotation") is not None


def test_rotation_watcher_off_keeps_it_off_even_in_a_pod(served: Any, user: Any) -> None:
    args, env, kube = user
    pod = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "1"}
    server = start(served, [*args, "--rotation-watcher", "off"], {**env, **pod})
    time.sleep(0.5)
    assert kube.requests == [] and "rotation_watcher=off" in server.output
