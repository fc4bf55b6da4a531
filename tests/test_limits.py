"""Limits on what one call may take: when one is hit, that call fails with the right gRPC
status and the server goes on serving the others.

Real gRPC over sockets (TCP, and a Unix domain socket). The slow store is the Vault
stand-in (tests/support/vault.py, Vault's documented HTTP API, read through hvac, since
no Vault server binary can be installed here) with its `delay` knob.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from backends import CredentialResolver, ResolverSettings
from backends.vault import VaultSettings
from compiler.pipeline import compile_listener, load_policies
from server.api import extension_pb2_grpc as api_grpc
from server.app import ExtensionServer, ServerSettings
from server.service import CallLimits
from tests.support.builders import https_listener, managers, policy
from tests.support.compile import admitted, tables
from tests.support.hook import listener_request
from tests.support.secrets import remember
from tests.support.vault import ROOT_TOKEN, VaultStandIn

SECRET = "gateways/default/slow"
SLOW_STORE = 1.0  # seconds the Vault stand-in waits before each answer


class Start:
    """Starts in-process servers with given limits, all reading the one Vault stand-in."""

    def __init__(
        self, make: Callable[..., api_grpc.EnvoyGatewayExtensionStub], vault: VaultStandIn
    ):
        self._make, self.vault = make, vault

    def __call__(self, limits: CallLimits, **settings: Any) -> api_grpc.EnvoyGatewayExtensionStub:
        return self._make(limits, **settings)


@pytest.fixture
def start(vault: VaultStandIn, tmp_path: Path) -> Iterator[Start]:
    """An in-process server with these limits (and Vault behind a slow stand-in)."""
    servers: list[ExtensionServer] = []
    channels: list[grpc.Channel] = []
    remember("slow-store-password")
    token_file = tmp_path / "token"
    token_file.write_text(ROOT_TOKEN)
    vault.put_v2(SECRET, {"password": "slow-store-password"})
    vault.delay = SLOW_STORE

    def start_server(limits: CallLimits, **settings: Any) -> api_grpc.EnvoyGatewayExtensionStub:
        server = ExtensionServer(
            ServerSettings(
                **{"host": "127.0.0.1", "port": 0, "shutdown_grace": 1.0, **settings},
                vault=VaultSettings(addr=vault.url, token_file=str(token_file), timeout=5.0),
                resolver=ResolverSettings(timeout=5.0),
                limits=limits,
            )
        )
        server.start()
        servers.append(server)
        channel = grpc.insecure_channel(
            server.address if server.address.startswith("unix:") else f"127.0.0.1:{server.port}"
        )
        channels.append(channel)
        return api_grpc.EnvoyGatewayExtensionStub(channel)

    yield Start(start_server, vault)
    for channel in channels:
        channel.close()
    for server in servers:
        server.stop()


def usersfrom_policy(vault: VaultStandIn, name: str, users: dict[str, str]) -> bytes:
    """A policy whose users come from a Vault secret written here, under its namespace."""
    vault.put_v2(f"gateways/default/{name}", users)
    ref = {"vault": {"path": f"secret/data/gateways/default/{name}"}}
    return policy(name, None, None, usersFrom=ref)


def slow_policy() -> bytes:
    ref = {"vault": {"path": f"secret/data/{SECRET}", "key": "password"}}
    return policy("slow", "sam", None, passwordFrom=ref)


def test_a_request_over_the_message_size_is_refused_and_the_next_one_is_answered(
    start: Start,
) -> None:
    hooks = start(CallLimits(max_message_size=64 * 1024))
    too_big = listener_request(policy(), policy("huge", "x" * 100_000, "pw"))
    with pytest.raises(grpc.RpcError) as refused:
        hooks.PostHTTPListenerModify(too_big, timeout=10)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert admitted(hooks.PostHTTPListenerModify(listener_request(policy()))) == {"user"}


def test_an_answer_over_the_message_size_leaves_out_the_largest_policy_and_says_why(
    start: Start,
) -> None:
    """One team's long user list costs that team's policy, not the call: the answer fits."""
    small = [policy(f"p{i}", f"user-{i:03d}", f"password-{i:03d}") for i in range(5)]
    remember("bulk-password")
    bulk = usersfrom_policy(
        start.vault, "bulk", {f"bulk-user-{i:04d}": "bulk-password" for i in range(400)}
    )
    listener = https_listener(*(f"section-{i}" for i in range(4)))
    request = listener_request(*small, bulk, listener=listener)
    whole = compile_listener(listener, load_policies([*small], CredentialResolver())).listener
    limit = whole.ByteSize() + 2_000  # room for the small policies, not for 400 users x 4
    hooks = start(CallLimits(max_message_size=max(limit, request.ByteSize())))

    answer = hooks.PostHTTPListenerModify(request, timeout=10)

    assert answer.ByteSize() <= max(limit, request.ByteSize())
    assert len(managers(answer.listener)) == 4  # every manager still protected
    assert [sorted(table) for table in tables(answer)] == [[f"user-{i:03d}" for i in range(5)]] * 4


def test_a_listener_too_large_to_answer_even_without_users_is_refused_with_what_to_raise(
    start: Start,
) -> None:
    """The listener itself, not a policy: the one size that may still fail the call."""
    listener = https_listener(*(f"section-{i}" for i in range(60)))
    request = listener_request(policy(), listener=listener)
    hooks = start(CallLimits(max_message_size=request.ByteSize() + 10))
    with pytest.raises(grpc.RpcError) as refused:
        hooks.PostHTTPListenerModify(request, timeout=10)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "without any user" in str(refused.value.details())
    assert "--max-message-size" in str(refused.value.details())
    assert "maxMessageSize" in str(refused.value.details())
    assert admitted(hooks.PostHTTPListenerModify(listener_request(policy()))) == {"user"}


def test_calls_beyond_the_concurrency_limit_are_refused_at_once(start: Start) -> None:
    hooks = start(CallLimits(max_concurrent_calls=2), workers=8)
    request = listener_request(slow_policy())  # the first calls wait for the store
    codes: list[grpc.StatusCode] = []
    barrier = threading.Barrier(4)

    def one_call() -> None:
        barrier.wait()
        try:
            hooks.PostHTTPListenerModify(request, timeout=20)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as error:
            codes.append(error.code())

    threads = [threading.Thread(target=one_call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(code.name for code in codes) == ["OK"] * 2 + ["RESOURCE_EXHAUSTED"] * 2
    assert admitted(hooks.PostHTTPListenerModify(request, timeout=20)) == {"sam"}


def test_a_call_past_its_deadline_fails_and_its_answer_is_ready_for_the_next(
    start: Start,
) -> None:
    hooks = start(CallLimits(call_timeout=0.3))
    request = listener_request(slow_policy())
    with pytest.raises(grpc.RpcError) as late:
        hooks.PostHTTPListenerModify(request, timeout=20)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # Meanwhile other calls are served, and once the store has answered, so is this one.
    assert admitted(hooks.PostHTTPListenerModify(listener_request(policy()))) == {"user"}
    time.sleep(SLOW_STORE + 0.5)
    assert admitted(hooks.PostHTTPListenerModify(request, timeout=20)) == {"sam"}


def test_the_hook_is_served_on_a_unix_domain_socket(start: Start, tmp_path: Path) -> None:
    hooks = start(CallLimits(), unix_socket=str(tmp_path / "extension-server.sock"))
    assert (tmp_path / "extension-server.sock").is_socket()
    assert admitted(hooks.PostHTTPListenerModify(listener_request(policy()))) == {"user"}
