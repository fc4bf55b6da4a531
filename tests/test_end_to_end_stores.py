"""Passwords from Vault, end to end: real extension server, real Envoy, Vault stand-in.

Vault is a stand-in that follows Vault's documented HTTP API (tests/support/vault.py; no
Vault binary can be installed here), read by the server through the real hvac client.
Envoy Gateway's part is played by `GatewayStandIn`, which re-translates every quarter of
a second, as Envoy Gateway does whenever anything in the cluster changes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from server.demo.envoy import HttpResponse
from server.demo.stack import LocalGateway, local_gateway
from server.demo.story import basic
from tests.support.secrets import remember
from tests.support.vault import VaultStandIn, seed_policy_from_vault

TTL, MAX_STALE = 1.0, 3.0
TRANSLATE_EVERY = 0.25
GIVE_UP_AFTER = 20.0  # a bound on the polling loops, not a performance assertion
SECRET = "gateways/default/eg"  # under the default tenancy template secret/data/gateways/{ns}/
TOKEN = "hvs.e2e-server-token"
FIRST, SECOND = "first-vault-password", "rotated-vault-password"


@dataclass
class Stack:
    vault: VaultStandIn
    local: LocalGateway

    def translate(self) -> None:
        self.local.apply([seed_policy_from_vault(f"secret/data/{SECRET}")])

    def get(self, password: str) -> HttpResponse:
        return self.local.get(basic("user", password))

    def until(self, condition: Any) -> float:
        """Re-translate until `condition()` holds; the seconds it took."""
        started = time.monotonic()
        while not condition():
            assert time.monotonic() - started < GIVE_UP_AFTER, "the condition never held"
            time.sleep(TRANSLATE_EVERY)
            self.translate()
        return time.monotonic() - started


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("stores")
    remember(TOKEN, FIRST, SECOND)
    token_file = workdir / "vault-token"
    token_file.write_text(TOKEN)
    with VaultStandIn() as vault:
        vault.add_token(TOKEN, policies=["secret/data/gateways/"])
        vault.put_v2(SECRET, {"password": FIRST})
        server_args = [
            "--vault-addr", vault.url, "--vault-token-file", str(token_file),
            "--secret-cache-ttl", f"{TTL}s", "--secret-max-stale", f"{MAX_STALE}s",
            "--backend-timeout", "1s", "--log-level", "debug",
        ]  # fmt: skip
        with local_gateway(workdir, *server_args) as local:
            stack = Stack(vault, local)
            stack.translate()
            yield stack


def test_a_password_kept_in_vault_lets_the_user_in(stack: Stack) -> None:
    response = stack.get(FIRST)
    assert response.status == 200
    assert response.json()["headers"]["X-Example-Ext"] == ["user"]
    assert stack.get("wrong").status == 401


def test_a_rotation_in_vault_reaches_envoy_without_anyone_editing_a_policy(stack: Stack) -> None:
    stack.vault.put_v2(SECRET, {"password": SECOND})
    seconds = stack.until(lambda: stack.get(SECOND).status == 200)
    assert stack.get(FIRST).status == 401
    print(
        f"\nrotation in Vault -> Envoy answers 200 to the new password: {seconds:.2f}s "
        f"(cache TTL {TTL:g}s, re-translation every {TRANSLATE_EVERY:g}s)"
    )


def test_vault_down_past_max_stale_denies_the_user_and_its_return_lets_them_in(
    stack: Stack,
) -> None:
    password = SECOND
    stack.until(lambda: stack.get(password).status == 200)
    stack.vault.stop()
    try:
        stale = stack.until(lambda: stack.get(password).status == 401)
        print(
            f"\nVault stopped -> Envoy answers 401: {stale:.2f}s (TTL {TTL:g}s + max-stale {MAX_STALE:g}s)"
        )
        assert stack.get(password).status == 401  # fail closed: never an open listener
        assert stack.get("").status == 401
    finally:
        stack.vault.start()
    back = stack.until(lambda: stack.get(password).status == 200)
    print(f"Vault back -> Envoy answers 200 again: {back:.2f}s")
