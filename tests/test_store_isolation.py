"""A store that hangs costs its own policies one timeout, and the other store's nothing.

Two stores at once, both real clients over HTTP: Vault is a stand-in that follows Vault's
documented HTTP API (tests/support/vault.py; no Vault binary can be installed here), read
through hvac, and made to hang with its `delay` knob; AWS Secrets Manager is moto's
server mode, read through boto3. Nothing here measures time: the stories are about which
requests reached Vault before a call returned, and whether a call returned at all.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backends import CredentialResolver
from compiler.errors import UnresolvedCredentialError
from tests.support.aws import MotoServer, dummy_aws_environment
from tests.support.builders import policy
from tests.support.compile import admitted, hook
from tests.support.secrets import remember
from tests.support.stores import both_stores
from tests.support.vault import VaultStandIn

HUNG = 600.0  # the Vault stand-in's delay: it answers when the test stops it, not before
GIVE_UP_AFTER = 60.0  # a bound on waiting for a call, not a performance assertion


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[MotoServer]:
    for name in [*os.environ]:
        if name.startswith("VAULT_"):
            monkeypatch.delenv(name)
    dummy_aws_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))  # hvac reads ~/.vault-token
    with MotoServer() as server:
        server.reset()  # moto keeps its state per process, not per server
        for name in ("alice", "bob"):
            remember(f"{name}-aws-password")
            server.secrets_client().create_secret(
                Name=f"gateways/default/{name}", SecretString=f"{name}-aws-password"
            )
        yield server
        server.reset()


@pytest.fixture
def resolvers(vault: VaultStandIn) -> Iterator[list[CredentialResolver]]:
    made: list[CredentialResolver] = []
    yield made
    vault.stop()  # the requests it holds fail at once
    for resolver in made:
        resolver.close()  # and the fetch threads are done before the test is


@pytest.fixture
def stores(
    vault: VaultStandIn, moto: MotoServer, tmp_path: Path, resolvers: list[CredentialResolver]
) -> Callable[[float], CredentialResolver]:
    """A resolver over both stores with this backend timeout; closed after the test."""

    def make(timeout: float) -> CredentialResolver:
        resolvers.append(both_stores(vault, moto, tmp_path, timeout))
        return resolvers[-1]

    return make


def from_vault(number: int) -> bytes:
    return policy(
        f"vault-{number}",
        f"vault-user-{number}",
        None,
        passwordFrom={
            "vault": {"path": f"secret/data/gateways/default/s{number}", "key": "password"}
        },
    )


def from_aws(user: str) -> bytes:
    return policy(
        f"aws-{user}",
        user,
        None,
        passwordFrom={"awsSecretsManager": {"secretId": f"gateways/default/{user}"}},
    )


def vault_reads(vault: VaultStandIn) -> int:
    return vault.count("/v1/secret/data/gateways/default/")


def test_a_call_waits_for_its_store_lookups_together_not_one_after_another(
    vault: VaultStandIn, stores: Callable[[float], CredentialResolver]
) -> None:
    """48 Vault secrets behind a hung Vault, and one from AWS, in one call.

    Lookups one after another (16 at a time) would each wait out the timeout, and the
    call would return only after all 48 had reached Vault. Begun together and waited for
    against one deadline, the call returns before Vault's fetch threads get to them all.
    """
    vault.delay = HUNG
    resolver = stores(3.0)

    result = hook(*(from_vault(n) for n in range(48)), from_aws("alice"), resolver=resolver)

    assert admitted(result) == {"alice"}
    assert len(result.errors) == 48
    assert all(isinstance(error, UnresolvedCredentialError) for error in result.errors)
    assert all("did not answer" in error.problem for error in result.errors)
    assert vault_reads(vault) < 48


def test_calls_held_up_by_a_hung_vault_never_hold_up_a_call_that_reads_only_aws(
    vault: VaultStandIn, stores: Callable[[float], CredentialResolver]
) -> None:
    vault.delay = HUNG
    resolver = stores(HUNG / 2)
    stuck = [
        threading.Thread(
            target=hook,
            args=tuple(from_vault(16 * c + n) for n in range(16)),
            kwargs={"resolver": resolver},
            daemon=True,
        )
        for c in range(4)
    ]
    for thread in stuck:
        thread.start()
    waiting = threading.Event()
    for _ in range(int(GIVE_UP_AFTER / 0.05)):
        if vault.count("/v1/") or waiting.wait(0.05):
            break  # Vault holds a request: the calls above wait on it, all their threads too

    answers: list[set[str]] = []
    aws_only = threading.Thread(
        target=lambda: answers.append(
            admitted(hook(from_aws("alice"), from_aws("bob"), resolver=resolver))
        )
    )
    aws_only.start()
    aws_only.join(GIVE_UP_AFTER)

    assert answers == [{"alice", "bob"}]
    assert all(thread.is_alive() for thread in stuck)  # still waiting for Vault meanwhile
    vault.stop()
    for thread in stuck:
        thread.join(GIVE_UP_AFTER)
