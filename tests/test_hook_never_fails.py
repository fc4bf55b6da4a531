"""Nothing a tenant controls makes the hook answer an error status: it costs its own policy.

With Envoy Gateway's `failOpen: false`, one error answer keeps the last configuration of
every Gateway (new Gateways unprogrammed, revoked users still admitted). Each story below
is something one team can write into its own store prefix or its own policy; in each, the
call answers OK, every HTTP connection manager stays protected, the neighbour team's user
still gets in, and the team's policy (or entry) is reported with its reason.

Real gRPC to an in-process server. Vault is the stand-in of tests/support/vault.py, which
follows Vault's documented HTTP API and status codes, read through the real hvac client (no
Vault server binary can be installed here); AWS Secrets Manager is moto in HTTP server mode,
read through the real boto3.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import prometheus_client
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends import ResolverSettings
from backends.aws import AwsSettings
from backends.vault import VaultSettings
from server.app import ServerSettings
from server.service import CallLimits
from tests.support.aws import REGION, MotoServer, dummy_aws_environment
from tests.support.builders import https_listener, policy
from tests.support.hook import Answered, HookServer, hook_server
from tests.support.poison import AWS_STRINGS, VAULT_DOCUMENTS, VAULT_VALUES, policy_objects
from tests.support.secrets import remember, sha
from tests.support.vault import RawJson, VaultStandIn

TOKEN = "hvs.never-fails-token"
NEIGHBOUR_PASSWORD = "neighbour-password"
DEEP = 5_000  # nesting levels: far past Python's recursion limit (1000)


def neighbour() -> bytes:
    """The other team's policy, in the same call: its user must always get in."""
    return policy("neighbour", "nina", NEIGHBOUR_PASSWORD)


def vault_policy(name: str, secret: str, *, key: str | None = "password", **spec: Any) -> bytes:
    ref: dict[str, Any] = {"path": f"secret/data/gateways/default/{secret}"}
    if key is not None:
        ref["key"] = key
        return policy(name, name, None, passwordFrom={"vault": ref}, **spec)
    return policy(name, None, None, usersFrom={"vault": ref}, **spec)


def aws_policy(name: str, secret: str, *, users: bool = True) -> bytes:
    ref = {"awsSecretsManager": {"secretId": f"gateways/default/{secret}"}}
    if users:
        return policy(name, None, None, usersFrom=ref)
    return policy(name, name, None, passwordFrom=ref)


class Stores:
    def __init__(self, vault: VaultStandIn, moto: MotoServer, token_file: Path) -> None:
        self.vault, self.moto, self.token_file = vault, moto, token_file

    def aws(self, name: str, text: str) -> None:
        self.moto.secrets_client().create_secret(Name=f"gateways/default/{name}", SecretString=text)

    def settings(self, **changes: Any) -> ServerSettings:
        return ServerSettings(
            vault=VaultSettings(addr=self.vault.url, token_file=str(self.token_file)),
            aws=AwsSettings(region=REGION, endpoint_url=self.moto.endpoint_url),
            **changes,
        )


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    home = tmp_path_factory.mktemp("home")
    remember(TOKEN, NEIGHBOUR_PASSWORD)
    token_file = home / "vault-token"
    token_file.write_text(TOKEN)
    with pytest.MonkeyPatch.context() as patch:
        for name in [*os.environ]:
            if name.startswith("VAULT_"):
                patch.delenv(name)
        dummy_aws_environment(patch, home)
        with VaultStandIn() as vault, MotoServer() as moto:
            moto.reset()
            vault.add_token(TOKEN)
            yield Stores(vault, moto, token_file)
            moto.reset()


@pytest.fixture(scope="module")
def hook(stores: Stores) -> Iterator[HookServer]:
    with hook_server(stores.settings(resolver=ResolverSettings(max_users_per_policy=1_000))) as h:
        yield h


def assert_only_that_policy_paid(answered: Answered, policy_name: str, reason: str) -> None:
    assert answered.code == grpc.StatusCode.OK
    assert "nina" in answered.admitted
    assert answered.tables[0]["nina"] == sha(NEIGHBOUR_PASSWORD)
    assert reason in answered.rejected.get(f"default/{policy_name}", ""), answered.events


# --- Store contents --------------------------------------------------------------------------


def test_a_sha_value_with_non_ascii_text_denies_that_user_only(
    stores: Stores, hook: HookServer
) -> None:
    stores.vault.put_v2("gateways/default/accented", {"password": "{SHA}" + "é" * 28})
    answered = hook.call("accented", neighbour(), vault_policy("accented", "accented"))
    assert_only_that_policy_paid(answered, "accented", "unsupported_hash")
    assert "accented" not in answered.admitted


def test_json_nested_thousands_deep_in_vault_denies_that_policy_only(
    stores: Stores, hook: HookServer
) -> None:
    deep = RawJson("[" * DEEP + "]" * DEEP)
    stores.vault.put_v2("gateways/default/deep", {"password": deep})
    answered = hook.call("deep-vault", neighbour(), vault_policy("deep", "deep"))
    assert_only_that_policy_paid(answered, "deep", "unresolved")


def test_json_nested_thousands_deep_in_an_aws_secret_denies_that_policy_only(
    stores: Stores, hook: HookServer
) -> None:
    stores.aws("deep-aws", '{"a":' * DEEP + "1" + "}" * DEEP)
    answered = hook.call("deep-aws", neighbour(), aws_policy("deep-aws", "deep-aws"))
    assert_only_that_policy_paid(answered, "deep-aws", "unresolved")
    (line,) = answered.named("policy.rejected")
    assert "too deeply" in line["error"]


def test_a_failed_answer_is_remembered_not_asked_again_at_every_call(
    stores: Stores, hook: HookServer
) -> None:
    stores.vault.put_v2("gateways/default/again", {"password": RawJson("[" * DEEP + "]" * DEEP)})
    stores.vault.reset_counts()
    for _ in range(3):
        answered = hook.call("again", neighbour(), vault_policy("again", "again"))
        assert_only_that_policy_paid(answered, "again", "unresolved")
    assert stores.vault.count("secret/data/gateways/default/again") == 1


def test_a_kv_v1_secret_read_as_kv_v2_with_a_metadata_that_is_no_object_is_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`secret/` mounted as KV v1: the policy reads it as KV v2, and the value it finds has
    the KV v2 shape with a `metadata` of another type."""
    remember("v1-password")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    with VaultStandIn(kv_v2_mounts=(), kv_v1_mounts=("secret",)) as vault:
        vault.add_token(TOKEN)
        vault.put_v1(
            "data/gateways/default/v1",
            {"data": {"password": "v1-password"}, "metadata": 7},
            mount="secret",
        )
        settings = ServerSettings(vault=VaultSettings(addr=vault.url, token_file=str(token_file)))
        with hook_server(settings) as server:
            answered = server.call("kv-v1", neighbour(), vault_policy("v1", "v1"))
    assert answered.code == grpc.StatusCode.OK
    assert answered.admitted == {"nina", "v1"}


# --- Sizes -------------------------------------------------------------------------------------


def test_a_user_list_too_large_for_the_message_leaves_out_that_policy_only(
    stores: Stores,
) -> None:
    users = {f"bulk-{i:05d}": "bulk-password" for i in range(3_000)}
    remember("bulk-password")
    stores.aws("bulk", json.dumps(users))
    limits = CallLimits(max_message_size=96 * 1024)  # 3 000 users x 4 chains do not fit
    with hook_server(stores.settings(limits=limits)) as server:
        listener = https_listener("a", "b", "c", "d")
        answered = server.call("bulk", neighbour(), aws_policy("bulk", "bulk"), listener=listener)
        assert_only_that_policy_paid(answered, "bulk", "too_large")
        (line,) = answered.named("policy.rejected")
        assert "--max-message-size" in line["error"] and "maxMessageSize" in line["error"]
        assert len(answered.tables) == 4
        again = server.call("bulk", neighbour(), aws_policy("bulk", "bulk"), listener=listener)
        assert again.listener == answered.listener


def test_more_users_than_one_policy_may_bring_denies_that_policy_only(
    stores: Stores, hook: HookServer
) -> None:
    stores.aws("many", json.dumps({f"many-{i:04d}": "many-password" for i in range(1_001)}))
    remember("many-password")
    answered = hook.call("many", neighbour(), aws_policy("many", "many"))
    assert_only_that_policy_paid(answered, "many", "too_large")
    (line,) = answered.named("policy.rejected")
    assert "1001 users" in line["error"] and "--max-users-per-policy" in line["error"]


# --- Parsing as Envoy parses -------------------------------------------------------------------


def test_htpasswd_text_from_a_store_has_the_lines_envoy_sees(
    stores: Stores, hook: HookServer
) -> None:
    """A vertical tab, a form feed or U+2028 ends a line for str.splitlines(), not for Envoy:
    the user after it is part of the line before, whose hash then is no hash."""
    remember("carol-password", "mallory-password", "trent-password")
    carol, mallory, trent = (sha(f"{n}-password") for n in ("carol", "mallory", "trent"))
    text = f"carol:{carol}\x0bmallory:{mallory}\ntrent:{trent}\u2028eve:{sha('eve-password')}\n"
    stores.aws("lines", text)
    answered = hook.call("lines", neighbour(), aws_policy("lines", "lines"))
    assert answered.code == grpc.StatusCode.OK
    assert answered.admitted == {"nina"}  # neither mallory nor eve: Envoy sees no such lines
    (line,) = answered.named("policy.entries_rejected")
    assert line["entries"] == 2 and line["reasons"] == "unsupported_hash=2"


def test_a_name_or_path_with_a_trailing_newline_is_refused(hook: HookServer) -> None:
    odd_namespace = policy("nl", "nl-user", "nl-password", namespace="default\n")
    odd_path = policy(
        "path-nl",
        "path-nl",
        None,
        passwordFrom={"vault": {"path": "secret/data/gateways/default/x\n", "key": "k"}},
    )
    remember("nl-password")
    answered = hook.call("newline", neighbour(), odd_namespace, odd_path)
    assert answered.code == grpc.StatusCode.OK
    assert answered.admitted == {"nina"}
    assert answered.rejected["default/path-nl"] == "tenancy"
    assert "malformed" in answered.rejected.values()  # the namespace: no name to give it


# --- Policies --------------------------------------------------------------------------------


@pytest.mark.parametrize("targets", [[], None], ids=["empty", "absent"])
def test_a_policy_that_names_no_gateway_is_rejected_not_applied_everywhere(
    hook: HookServer, targets: list[Any] | None
) -> None:
    name = f"everywhere-{'absent' if targets is None else 'empty'}"
    body = json.loads(policy(name, "eve", "eve-password"))
    remember("eve-password")
    if targets is None:
        del body["spec"]["targetRefs"]
    else:
        body["spec"]["targetRefs"] = targets
    listener = https_listener("a", "b", gateway="default/eg")
    answered = hook.call(
        f"targets-{targets}", neighbour(), json.dumps(body).encode(), listener=listener
    )
    assert_only_that_policy_paid(answered, name, "no_target")
    assert "eve" not in answered.admitted


@pytest.mark.parametrize(
    "header", ["X-Forwarded-For", "x-forwarded-proto", "Forwarded", "X-Real-IP", "X-Request-Id",
               "x-envoy-original-path", "traceparent"],
)  # fmt: skip
def test_a_username_header_proxies_trust_is_refused(hook: HookServer, header: str) -> None:
    remember("hdr-password")
    answered = hook.call(
        f"header-{header}", neighbour(), policy("hdr", "hdr", "hdr-password", header=header)
    )
    assert_only_that_policy_paid(answered, "hdr", "invalid_header")


# --- Logs and metrics --------------------------------------------------------------------------


def test_ten_thousand_broken_entries_cost_one_bounded_line_not_one_per_entry(
    stores: Stores,
) -> None:
    broken = {f"broken:{i:05d}": "broken-password" for i in range(10_000)}
    remember("broken-password")
    stores.aws("broken", json.dumps(broken))
    resolver = ResolverSettings(max_users_per_policy=20_000)
    with hook_server(stores.settings(resolver=resolver)) as server:
        for _ in range(3):  # the first compiles, the others are answered from memory
            answered = server.call("broken", neighbour(), aws_policy("broken", "broken"))
            assert answered.code == grpc.StatusCode.OK
        lines = [e for e in answered.events if e["event"].startswith("policy.")]
    (line,) = lines  # one line for 10 000 entries and three calls
    assert line["entries"] == 10_000 and line["not_shown"] == 9_997
    assert len(json.dumps(line)) < 2_000


def test_rejections_and_error_answers_are_counted_by_reason_and_code(hook: HookServer) -> None:
    def count(name: str, **labels: str) -> float:
        return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0

    before = count("extension_server_policy_rejections_total", reason="no_target")
    entries = count("extension_server_entry_rejections_total", reason="invalid_username")
    errors = count(
        "extension_server_hook_errors_total", method="PostHTTPListenerModify", code="INTERNAL"
    )
    body = json.loads(policy("untargeted", "u1", "u1-password"))
    remember("u1-password")
    body["spec"]["targetRefs"] = []
    hook.call("counted", json.dumps(body).encode(), policy("colon", "a:b", "colon-password"))
    hook.call("counted", json.dumps(body).encode(), policy("colon", "a:b", "colon-password"))
    assert count("extension_server_policy_rejections_total", reason="no_target") == before + 2
    assert count("extension_server_entry_rejections_total", reason="invalid_username") == (
        entries + 2
    )
    assert (
        count(
            "extension_server_hook_errors_total", method="PostHTTPListenerModify", code="INTERNAL"
        )
        == errors
    )


# --- Any value, any policy -------------------------------------------------------------------

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def uncached(stores: Stores) -> Iterator[HookServer]:
    """A server that reads every secret again at every call: each example is what the stores
    hold now."""
    for name in ("poison-users", "poison-password"):
        stores.aws(name, "placeholder")
    resolver = ResolverSettings(cache_ttl=0.0, max_stale=0.0, max_users_per_policy=1_000)
    with hook_server(stores.settings(resolver=resolver, log_repeat_interval=0)) as server:
        yield server


@PROPERTY
@given(
    vault_users=VAULT_DOCUMENTS,
    vault_password=VAULT_VALUES,
    aws_users=AWS_STRINGS,
    aws_password=AWS_STRINGS,
    others=st.lists(policy_objects(), max_size=3),
    https=st.booleans(),
)
def test_any_stored_value_and_any_policy_object_cost_only_their_own_policy(
    stores: Stores,
    uncached: HookServer,
    vault_users: dict[str, Any],
    vault_password: Any,
    aws_users: str,
    aws_password: str,
    others: list[bytes],
    https: bool,
) -> None:
    # Generated values are not secrets to look for in the logs: one may also be a user name.
    stores.vault.put_v2("gateways/default/poison-users", vault_users, secret=False)
    stores.vault.put_v2(
        "gateways/default/poison-password", {"password": vault_password}, secret=False
    )
    client = stores.moto.secrets_client()
    client.put_secret_value(SecretId="gateways/default/poison-users", SecretString=aws_users)
    client.put_secret_value(SecretId="gateways/default/poison-password", SecretString=aws_password)
    policies = [
        neighbour(),
        vault_policy("vault-users", "poison-users", key=None),
        vault_policy("vault-password", "poison-password"),
        aws_policy("aws-users", "poison-users"),
        aws_policy("aws-password", "poison-password", users=False),
        *others,
    ]
    listener = https_listener("a", "b") if https else None
    answered = uncached.call("poison", *policies, listener=listener)
    assert answered.code == grpc.StatusCode.OK
    assert "nina" in answered.admitted  # every manager protected, the neighbour let in
