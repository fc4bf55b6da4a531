"""A password rotated in Vault reaches Envoy on its own: no policy edited, no restart.

Real extension server (a process), real Envoy, and three stand-ins, each written because
the real thing cannot be installed here: Vault (tests/support/vault.py, Vault's documented
HTTP API, read through hvac), the Kubernetes API server (tests/support/kube.py, read and
patched through lightkube) and Envoy Gateway (the loop below: it lists the policies from
the API stand-in over HTTP with lightkube, as Envoy Gateway reads the API server, and
re-translates when a `metadata.generation` increases, as its generation-changed predicate
does; the stand-in serves no watch, so it lists every 0.1 s).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from server.demo.envoy import HttpResponse
from server.demo.stack import LocalGateway, local_gateway
from server.demo.story import basic
from server.kube import ListenerContextExample
from tests.support.kube import KubeStandIn
from tests.support.secrets import remember
from tests.support.vault import VaultStandIn, seed_policy_from_vault

POLL = 1.0  # --rotation-poll-interval
TTL = 300.0  # so long that only the watcher can bring the new password in time
NAMESPACE = "default"
SECRET = "gateways/default/eg"
TOKEN = "hvs.rotation-e2e-token"
BEFORE, AFTER = "password-before-rotation", "password-after-rotation"
GIVE_UP_AFTER = 30.0  # a bound on the polling loops, not a performance assertion


class GatewayLoop:
    """Envoy Gateway's part: re-translate when a policy's generation increases."""

    def __init__(self, kube: KubeStandIn, local: LocalGateway) -> None:
        self.client, self.local = kube.client(), local
        self.translations = 0
        self._seen: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.translate_if_changed()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.translate_if_changed()

    def translate_if_changed(self) -> None:
        listed = self.client.list(ListenerContextExample, namespace=NAMESPACE)
        policies = [policy.to_dict() for policy in listed]
        generations = {p["metadata"]["name"]: p["metadata"]["generation"] for p in policies}
        if generations == self._seen:
            return
        # Counted before Envoy can serve the result, so a test that sees the new listener
        # in Envoy always sees its translation counted too.
        self._seen = generations
        self.translations += 1
        self.local.apply(policies)


@dataclass
class Stack:
    vault: VaultStandIn
    kube: KubeStandIn
    loop: GatewayLoop

    def get(self, password: str) -> HttpResponse:
        return self.loop.local.get(basic("user", password))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("rotation")
    remember(TOKEN, BEFORE, AFTER)
    token_file = workdir / "vault-token"
    token_file.write_text(TOKEN)
    with VaultStandIn() as vault, KubeStandIn() as kube:
        vault.add_token(TOKEN)
        vault.put_v2(SECRET, {"password": BEFORE})
        kube.put_policy(seed_policy_from_vault(f"secret/data/{SECRET}", namespace=NAMESPACE))
        kubeconfig = {"KUBECONFIG": str(kube.kubeconfig(workdir / "kubeconfig"))}
        server_args = [
            "--vault-addr", vault.url, "--vault-token-file", str(token_file),
            "--secret-cache-ttl", f"{TTL:g}s", "--rotation-poll-interval", f"{POLL:g}s",
            "--rotation-lease-namespace", "envoy-gateway-system",
            "--rotation-watcher", "on",  # outside a pod: asked for
        ]  # fmt: skip
        with local_gateway(workdir, *server_args, env=kubeconfig) as local:
            loop = GatewayLoop(kube, local)
            loop.start()
            yield Stack(vault, kube, loop)
            loop.stop()


def until(condition: Any) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < GIVE_UP_AFTER, "the condition never held"
        time.sleep(0.05)
    return time.monotonic() - started


def test_a_rotated_password_is_enforced_by_envoy_without_anyone_editing_a_policy(
    stack: Stack,
) -> None:
    until(lambda: stack.get(BEFORE).status == 200)
    translations = stack.loop.translations

    stack.vault.put_v2(SECRET, {"password": AFTER})
    seconds = until(lambda: stack.get(AFTER).status == 200 and stack.get(BEFORE).status == 401)
    print(
        f"\nrotation in Vault -> Envoy admits the new password and refuses the old one: "
        f"{seconds:.2f}s (poll interval {POLL:g}s with 10% jitter, cache TTL {TTL:g}s)"
    )

    policy = stack.kube.get("ListenerContextExample", NAMESPACE, "listeneruser")
    assert policy is not None
    assert policy["spec"]["credentialsRevision"]  # the server's field, and only that, changed
    assert policy["spec"]["passwordFrom"]["vault"]["path"] == f"secret/data/{SECRET}"
    assert stack.loop.translations == translations + 1  # one re-translation, from one patch
    patches = [body for path, body in stack.kube.patches if "listenercontextexamples" in path]
    # Against the version listed: a policy changed since then is not patched.
    assert patches == [
        {
            "metadata": {"resourceVersion": patches[0]["metadata"]["resourceVersion"]},
            "spec": {"credentialsRevision": policy["spec"]["credentialsRevision"]},
        }
    ]


def test_with_nothing_rotated_the_watcher_patches_nothing(stack: Stack) -> None:
    patches = len(stack.kube.patches)
    time.sleep(3 * POLL)
    assert len(stack.kube.patches) == patches


def test_a_deleted_secret_is_refused_by_envoy_without_anyone_editing_a_policy(
    stack: Stack,
) -> None:
    until(lambda: stack.get(AFTER).status == 200)
    translations = stack.loop.translations
    stack.vault.delete_v2(SECRET)  # a soft delete: Vault keeps current_version
    seconds = until(lambda: stack.get(AFTER).status == 401)
    print(
        f"\nsecret deleted in Vault -> Envoy refuses its password: {seconds:.2f}s "
        f"(poll interval {POLL:g}s with 10% jitter, cache TTL {TTL:g}s)"
    )
    assert stack.loop.translations == translations + 1
