"""Envoy Gateway sends the same request on every translation: it gets the same answer again
until a credential behind it changes, and what was wrong with it is logged once, not at
every call.

Real gRPC over a socket. The stored-secret case reads through the real hvac client from
the Vault stand-in (tests/support/vault.py, Vault's documented HTTP API and status codes),
because no Vault server binary can be installed here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from backends import ResolverSettings
from backends.vault import VaultSettings
from compiler.model import VaultRef
from server.api import extension_pb2 as api
from server.api import extension_pb2_grpc as api_grpc
from server.app import ExtensionServer, ServerSettings
from server.demo.envoy import free_port
from tests.support.builders import policy
from tests.support.compile import users_of
from tests.support.hook import listener_request
from tests.support.secrets import remember
from tests.support.vault import ROOT_TOKEN, VaultStandIn

SERVICE = "envoygateway.extension.EnvoyGatewayExtension"
SECRET = "gateways/default/answers"
BEFORE, AFTER = "answers-password-before", "answers-password-after"


def called_three_times(served: object, method: str, request: Any) -> list[str]:
    """A server of its own (debug logs) called three times with `request`: each answer is
    the same bytes; what it logged."""
    port = free_port()
    args = ["--host", "127.0.0.1", "--port", str(port), "--log-level", "debug"]
    server = served(args, port=port)  # type: ignore[operator]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        hook = getattr(api_grpc.EnvoyGatewayExtensionStub(channel), method)
        answers = {hook(request, timeout=10).SerializeToString() for _ in range(3)}
    assert server.stop() == 0
    assert len(answers) == 1
    return list(server.log_lines)


def test_a_repeated_request_gets_the_same_bytes_and_its_rejections_are_logged_once(
    served: object,
) -> None:
    request = listener_request(policy(), policy("broken", "a:b", "pw"))
    lines = called_three_times(served, "PostHTTPListenerModify", request)
    broken = [line for line in lines if "default/broken" in line and "event=policy." in line]
    assert len(broken) == 1 and "event=policy.entries_rejected" in broken[0], broken
    calls = [line for line in lines if "event=hook.listener" in line]
    assert len(calls) == 3 and all("rejected_entries=1" in line for line in calls)
    # compiled once (info), then answered from memory (debug: not news)
    assert ["level=info" in line and "reused=false" in line for line in calls] == [1, 0, 0]
    assert all("level=debug" in line and " reused " in line for line in calls[1:])  # a flag


def test_a_repeated_translation_gets_the_same_bytes_and_is_logged_at_info_once(
    served: object,
) -> None:
    """The Translation hook keeps no answer memo (its compile memo makes a repeat cheap),
    but a translation whose listeners, routes and policy versions were just logged is not
    news: debug, not info."""
    sent = listener_request(policy(), policy("broken", "a:b", "pw"))
    request = api.PostTranslateModifyRequest(
        post_translate_context=api.PostTranslateExtensionContext(
            extension_resources=sent.post_listener_context.extension_resources
        ),
        listeners=[sent.listener],
    )
    lines = called_three_times(served, "PostTranslateModify", request)
    broken = [line for line in lines if "default/broken" in line and "event=policy." in line]
    assert len(broken) == 1 and "event=policy.entries_rejected" in broken[0], broken
    calls = [line for line in lines if "event=hook.translation" in line]
    assert ["level=info" in line for line in calls] == [1, 0, 0], calls


@dataclass
class VaultServer:
    vault: VaultStandIn
    server: ExtensionServer
    hooks: api_grpc.EnvoyGatewayExtensionStub


@pytest.fixture
def vault_server(vault: VaultStandIn, tmp_path: Path) -> Iterator[VaultServer]:
    remember(BEFORE, AFTER)
    token_file = tmp_path / "token"
    token_file.write_text(ROOT_TOKEN)
    vault.put_v2(SECRET, {"password": BEFORE})
    settings = ServerSettings(
        host="127.0.0.1",
        port=0,
        shutdown_grace=1.0,
        vault=VaultSettings(addr=vault.url, token_file=str(token_file)),
        resolver=ResolverSettings(cache_ttl=300.0),  # only a refresh brings a change
    )
    server = ExtensionServer(settings)
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield VaultServer(vault, server, api_grpc.EnvoyGatewayExtensionStub(channel))
    server.stop()


def test_a_secret_that_changed_behind_the_same_request_gets_a_new_answer(
    vault_server: VaultServer,
) -> None:
    ref = {"vault": {"path": f"secret/data/{SECRET}", "key": "password"}}
    request = listener_request(policy("stored", "sam", None, passwordFrom=ref))
    first = users_of(vault_server.hooks.PostHTTPListenerModify(request, timeout=10))

    vault_server.vault.put_v2(SECRET, {"password": AFTER})
    assert (
        users_of(vault_server.hooks.PostHTTPListenerModify(request, timeout=10)) == first
    )  # cached
    vault_server.server.resolver.refresh(VaultRef(f"secret/data/{SECRET}", key="password"))
    after = users_of(vault_server.hooks.PostHTTPListenerModify(request, timeout=10))

    assert list(after) == ["sam"] and after != first


def test_a_request_that_is_not_protobuf_is_refused_and_the_next_call_is_answered(
    vault_server: VaultServer,
) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{vault_server.server.port}")
    with channel:
        raw = channel.unary_unary(f"/{SERVICE}/PostHTTPListenerModify")
        with pytest.raises(grpc.RpcError) as refused:
            raw(b"\xff\xff\xff not protobuf", timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(
        users_of(vault_server.hooks.PostHTTPListenerModify(listener_request(policy()), timeout=10))
    ) == ["user"]
