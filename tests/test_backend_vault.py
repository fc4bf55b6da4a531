"""Passwords from HashiCorp Vault, as a user meets them: given this secret in Vault and
this policy, the hook admits (or denies) this user.

Vault here is `VaultStandIn` (tests/support/vault.py): a stand-in HTTP server that
follows Vault's documented HTTP API, because no Vault binary can be installed on this
machine. Everything else is real and unmocked: the real `hvac` client inside the real
`VaultStore`, `CredentialResolver` and its cache, `load_policies` and `compile_listener`,
and the htpasswd Envoy would read (`parse_like_envoy`).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from passlib.hash import apr_md5_crypt, ldap_sha1
from prometheus_client import REGISTRY

from backends import CredentialResolver, ResolverSettings
from backends.vault import VaultSettings, VaultStore
from compiler.errors import (
    PolicyError,
    TenancyError,
    UnresolvedCredentialError,
    UnsupportedHashError,
)
from compiler.pipeline import ListenerResult
from server.cli import main as cli_main
from server.settings import server_settings
from tests.support.builders import policy
from tests.support.compile import hook, users_of
from tests.support.vault import ROOT_TOKEN, VaultStandIn

SECRET = "gateways/default/eg"  # as the stand-in's put_v2 names it (mount "secret")
KV2_PATH = f"secret/data/{SECRET}"  # as a policy names it: Vault's HTTP API path
BCRYPT = "$2y$05$bvIG6Nmid91Mu9RcmmWZfO5HJIMCT8riNW0hEp8f6/FuA2/mHZFpe"
PASSWORD_FIELD = "spec.passwordFrom.vault.path"


def sha(password: str) -> str:
    return str(ldap_sha1.hash(password))


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No Vault setting of the machine leaks in (hvac also reads ~/.vault-token)."""
    for name in [*os.environ]:
        if name.startswith(("VAULT_", "EXTENSION_SERVER_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text + "\n")
    return str(path)


def gateway(
    vault: VaultStandIn,
    tmp_path: Path,
    *,
    token: str | None = ROOT_TOKEN,
    settings: ResolverSettings | None = None,
    **vault_settings: Any,
) -> CredentialResolver:
    """The server's resolver with a Vault store; by default a token from a file."""
    if token is not None and vault_settings.get("auth", "token") == "token":
        vault_settings.setdefault("token_file", write(tmp_path, "vault-token", token))
    store = VaultStore(VaultSettings(addr=vault.url, **vault_settings))
    return CredentialResolver(settings or ResolverSettings(), {"vault": store})


def password_from(
    name: str = "eg-users",
    username: str = "alice",
    namespace: str = "default",
    **vault: Any,
) -> bytes:
    vault.setdefault("path", KV2_PATH)
    vault.setdefault("key", "password")
    return policy(name, username, None, namespace, passwordFrom={"vault": vault})


def users_from(name: str = "eg-team", namespace: str = "default", **vault: Any) -> bytes:
    vault.setdefault("path", KV2_PATH)
    return policy(name, None, None, namespace, usersFrom={"vault": vault})


PLAIN = policy("plain", "bob", "bob-password")


def errors_of(result: ListenerResult, name: str) -> list[PolicyError]:
    return [error for error in result.errors if error.policy.name == name]


def denied(
    result: ListenerResult,
    name: str = "eg-users",
    kind: type[PolicyError] = UnresolvedCredentialError,
    field: str = PASSWORD_FIELD,
) -> PolicyError:
    """The one error that left policy `name` out; its users are not admitted."""
    (error,) = errors_of(result, name)
    assert type(error) is kind, error
    assert error.field == field
    return error


def stale_serves() -> float:
    value = REGISTRY.get_sample_value(
        "extension_server_secret_stale_serves_total", {"store": "vault"}
    )
    return value or 0.0


# --- What a secret holds, and who it admits ---------------------------------------------


def test_kv2_password_admits_the_user(vault: VaultStandIn, tmp_path: Path) -> None:
    vault.put_v2(SECRET, {"password": "alice-kv2-pass", "unrelated": "x"})
    result = hook(password_from(), PLAIN, resolver=gateway(vault, tmp_path))
    assert users_of(result) == {"alice": sha("alice-kv2-pass"), "bob": sha("bob-password")}
    assert result.errors == ()


def test_an_older_kv2_version_can_be_pinned(vault: VaultStandIn, tmp_path: Path) -> None:
    vault.put_v2(SECRET, {"password": "first-version"})
    vault.put_v2(SECRET, {"password": "second-version"})
    result = hook(
        password_from("pinned", "alice", version=1),
        password_from("latest", "carol"),
        resolver=gateway(vault, tmp_path),
    )
    assert users_of(result) == {"alice": sha("first-version"), "carol": sha("second-version")}
    assert result.errors == ()


def test_kv1_secret_with_a_kv1_tenancy_template(vault: VaultStandIn, tmp_path: Path) -> None:
    vault.put_v1(SECRET, {"password": "alice-kv1-pass"})
    resolver = gateway(
        vault, tmp_path, settings=ResolverSettings(vault_path_template="kv/gateways/{namespace}/")
    )
    result = hook(password_from(path=f"kv/{SECRET}", engine="kv-v1"), resolver=resolver)
    assert users_of(result) == {"alice": sha("alice-kv1-pass")}
    assert result.errors == ()


def test_a_kv1_secret_read_as_kv2_is_denied_with_a_hint(
    vault: VaultStandIn, tmp_path: Path
) -> None:
    vault.put_v1(SECRET, {"password": "alice-kv1-pass"})
    resolver = gateway(
        vault, tmp_path, settings=ResolverSettings(vault_path_template="kv/gateways/{namespace}/")
    )
    result = hook(password_from(path=f"kv/{SECRET}"), PLAIN, resolver=resolver)
    assert "engine: kv-v1" in denied(result).problem
    assert users_of(result) == {"bob": sha("bob-password")}


def test_users_from_a_map_of_passwords_and_sha_hashes(vault: VaultStandIn, tmp_path: Path) -> None:
    vault.put_v2(SECRET, {"alice": "alice-map-pass", "dave": sha("dave-map-pass")})
    result = hook(users_from(), resolver=gateway(vault, tmp_path))
    assert users_of(result) == {"alice": sha("alice-map-pass"), "dave": sha("dave-map-pass")}
    assert result.errors == ()


def test_users_from_a_key_holding_htpasswd_text(vault: VaultStandIn, tmp_path: Path) -> None:
    text = f"# the team\ncarol:{sha('carol-ht-pass')}\n\ndave:{sha('dave-ht-pass')}\n"
    vault.put_v2(SECRET, {"htpasswd": text, "owner": "platform-team"})
    result = hook(users_from(key="htpasswd"), resolver=gateway(vault, tmp_path))
    assert users_of(result) == {"carol": sha("carol-ht-pass"), "dave": sha("dave-ht-pass")}
    assert result.errors == ()


def test_a_stored_sha_hash_is_used_as_is(vault: VaultStandIn, tmp_path: Path) -> None:
    stored = sha("alice-hashed-pass")
    vault.put_v2(SECRET, {"password": stored})
    result = hook(password_from(), resolver=gateway(vault, tmp_path))
    assert users_of(result) == {"alice": stored}  # not the hash of the hash


def test_bcrypt_and_apr1_hashes_are_rejected_naming_the_user(
    vault: VaultStandIn, tmp_path: Path
) -> None:
    vault.put_v2(
        SECRET,
        {"alice": "alice-ok-pass", "bob": BCRYPT, "carol": apr_md5_crypt.hash("carol-pass")},
    )
    vault.put_v2("gateways/default/erin", {"password": BCRYPT})
    result = hook(
        users_from(),
        password_from("erin", "erin", path="secret/data/gateways/default/erin"),
        resolver=gateway(vault, tmp_path),
    )
    assert users_of(result) == {"alice": sha("alice-ok-pass")}
    team = errors_of(result, "eg-team")
    assert {type(error) for error in team} == {UnsupportedHashError}
    assert sorted(e.problem for e in team) == [
        "the stored value for user 'bob' is a hash Envoy cannot verify: bcrypt",
        "the stored value for user 'carol' is a hash Envoy cannot verify: apr1 ($apr1$)",
    ]
    erin = denied(result, "erin", UnsupportedHashError, "spec.passwordFrom")
    assert "'erin'" in erin.problem and "bcrypt" in erin.problem
    assert BCRYPT not in str(erin)


# --- How the server logs in -------------------------------------------------------------


def test_token_from_a_file_and_a_rotated_file_after_a_403(
    vault: VaultStandIn, tmp_path: Path
) -> None:
    vault.add_token("file-token-1", policies=["secret/data/gateways/"])
    vault.put_v2(SECRET, {"password": "alice-file-pass"})
    token_file = write(tmp_path, "token", "file-token-1")
    resolver = gateway(
        vault,
        tmp_path,
        token_file=token_file,
        settings=ResolverSettings(cache_ttl=0.05, max_stale=0),
    )
    assert users_of(hook(password_from(), resolver=resolver)) == {"alice": sha("alice-file-pass")}

    # the token is rotated (by an agent writing the file) and the old one revoked
    vault.add_token("file-token-2", policies=["secret/data/gateways/"])
    write(tmp_path, "token", "file-token-2")
    vault.revoke_token("file-token-1")
    time.sleep(0.1)
    result = hook(password_from(), resolver=resolver)
    assert users_of(result) == {"alice": sha("alice-file-pass")}
    assert result.errors == ()


def test_token_from_vault_token_variable(
    vault: VaultStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault.add_token("env-token", policies=["secret/data/gateways/"])
    vault.put_v2(SECRET, {"password": "alice-env-pass"})
    monkeypatch.setenv("VAULT_TOKEN", "env-token")
    result = hook(password_from(), resolver=gateway(vault, tmp_path, token=None))
    assert users_of(result) == {"alice": sha("alice-env-pass")}


def test_a_revoked_vault_token_variable_denies(
    vault: VaultStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Token auth without a file cannot log in again: fail closed, never open."""
    vault.add_token("env-token", policies=["secret/data/gateways/"])
    vault.put_v2(SECRET, {"password": "alice-env-pass"})
    monkeypatch.setenv("VAULT_TOKEN", "env-token")
    resolver = gateway(
        vault, tmp_path, token=None, settings=ResolverSettings(cache_ttl=0.05, max_stale=0)
    )
    assert users_of(hook(password_from(), resolver=resolver)) == {"alice": sha("alice-env-pass")}
    vault.revoke_token("env-token")
    time.sleep(0.1)
    result = hook(password_from(), PLAIN, resolver=resolver)
    denied(result)
    assert users_of(result) == {"bob": sha("bob-password")}


def test_kubernetes_login(vault: VaultStandIn, tmp_path: Path) -> None:
    vault.add_kubernetes_role("eg-gateway", "sa-jwt-abc", token_policies=["secret/data/gateways/"])
    vault.put_v2(SECRET, {"password": "alice-k8s-pass"})
    resolver = gateway(
        vault,
        tmp_path,
        auth="kubernetes",
        role="eg-gateway",
        kubernetes_jwt_file=write(tmp_path, "sa-token", "sa-jwt-abc"),
    )
    result = hook(password_from(), resolver=resolver)
    assert users_of(result) == {"alice": sha("alice-k8s-pass")}
    assert vault.count("auth/kubernetes/login") == 1


def test_kubernetes_login_with_a_foreign_jwt_denies(vault: VaultStandIn, tmp_path: Path) -> None:
    vault.add_kubernetes_role("eg-gateway", "sa-jwt-abc")
    vault.put_v2(SECRET, {"password": "alice-k8s-pass"})
    resolver = gateway(
        vault,
        tmp_path,
        auth="kubernetes",
        role="eg-gateway",
        kubernetes_jwt_file=write(tmp_path, "sa-token", "someone-elses-jwt"),
    )
    result = hook(password_from(), PLAIN, resolver=resolver)
    denied(result)
    assert users_of(result) == {"bob": sha("bob-password")}
    assert vault.count(f"/v1/{KV2_PATH}") == 0


def test_approle_login(vault: VaultStandIn, tmp_path: Path) -> None:
    vault.add_approle("eg-role-id", "eg-secret-id", token_policies=["secret/data/gateways/"])
    vault.put_v2(SECRET, {"password": "alice-approle-pass"})
    resolver = gateway(
        vault,
        tmp_path,
        auth="approle",
        approle_role_id="eg-role-id",
        approle_secret_id_file=write(tmp_path, "secret-id", "eg-secret-id"),
    )
    result = hook(password_from(), resolver=resolver)
    assert users_of(result) == {"alice": sha("alice-approle-pass")}
    assert vault.count("auth/approle/login") == 1


def test_a_namespace_reads_its_own_secrets_only(vault: VaultStandIn, tmp_path: Path) -> None:
    vault.add_token("team-token", namespace="team-ns")
    vault.put_v2(SECRET, {"password": "alice-team-pass"}, namespace="team-ns")
    vault.put_v2(SECRET, {"password": "alice-root-pass"})  # same path, root namespace
    vault.put_v2("gateways/default/root-only", {"password": "root-only-pass"})
    resolver = gateway(vault, tmp_path, token="team-token", namespace="team-ns")
    result = hook(
        password_from(),
        password_from("root-only", "carol", path="secret/data/gateways/default/root-only"),
        resolver=resolver,
    )
    assert users_of(result) == {"alice": sha("alice-team-pass")}
    assert "no secret" in denied(result, "root-only").problem
    assert vault.count(namespace="") == 0
    assert vault.count(namespace="team-ns") > 0


# --- Tokens that expire, get renewed or get revoked ------------------------------------


def read_for(resolver: CredentialResolver, seconds: float) -> list[ListenerResult]:
    results = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        results.append(hook(password_from(), resolver=resolver))
        time.sleep(0.1)
    return results


@pytest.mark.parametrize("ttl", [3.0, 1.5])
def test_a_token_is_renewed_before_it_expires(
    vault: VaultStandIn, tmp_path: Path, ttl: float
) -> None:
    vault.add_token("short-token", ttl=ttl, policies=["secret/data/gateways/"])
    vault.put_v2(SECRET, {"password": "alice-renew-pass"})
    stale_before = stale_serves()
    resolver = gateway(
        vault, tmp_path, token="short-token", settings=ResolverSettings(cache_ttl=0.05, max_stale=0)
    )
    results = read_for(resolver, 2.1)
    assert len(results) >= 10
    assert [errors for result in results if (errors := result.errors)] == []
    assert all(users_of(r) == {"alice": sha("alice-renew-pass")} for r in results)
    assert vault.renewals("short-token") >= 1
    assert stale_serves() == stale_before  # no failure was hidden by the cache


def test_a_token_is_renewed_while_the_server_reads_nothing(
    vault: VaultStandIn, tmp_path: Path
) -> None:
    """Idle for three token lifetimes (every secret cached): the token is still alive."""
    ttl = 1.5
    vault.add_token("idle-token", ttl=ttl, policies=["secret/data/gateways/"])
    vault.put_v2(SECRET, {"password": "alice-idle-pass"})
    resolver = gateway(
        vault, tmp_path, token="idle-token", settings=ResolverSettings(cache_ttl=3600)
    )
    try:
        assert users_of(hook(password_from(), resolver=resolver)) == {
            "alice": sha("alice-idle-pass")
        }
        reads = vault.count("/v1/secret/data/")
        time.sleep(3 * ttl)
        assert vault.count("/v1/secret/data/") == reads  # nothing was read meanwhile
        assert vault.renewals("idle-token") >= 2
        vault.put_v2(SECRET, {"password": "alice-idle-pass-2"})
        fresh = gateway(  # a new cache, the same token file: the token still works
            vault, tmp_path, token="idle-token", settings=ResolverSettings(cache_ttl=3600)
        )
        assert users_of(hook(password_from(), resolver=fresh)) == {
            "alice": sha("alice-idle-pass-2")
        }
        fresh.close()
    finally:
        resolver.close()


def test_a_token_file_written_after_start_up_is_read_when_first_needed(
    vault: VaultStandIn, tmp_path: Path
) -> None:
    """A Vault Agent sink often lands a moment after the server starts."""
    token_file = tmp_path / "agent-token"
    vault.put_v2(SECRET, {"password": "alice-agent-pass"})
    store = VaultStore(VaultSettings(addr=vault.url, token_file=str(token_file)))
    resolver = CredentialResolver(ResolverSettings(cache_ttl=0.05, max_stale=0), {"vault": store})

    before = hook(password_from(), resolver=resolver)
    assert users_of(before) == {}
    assert "cannot read" in denied(before).problem

    token_file.write_text(ROOT_TOKEN + "\n")
    time.sleep(0.1)  # past the remembered failure: min(5 s, the cache TTL)
    assert users_of(hook(password_from(), resolver=resolver)) == {"alice": sha("alice-agent-pass")}
    resolver.close()


def test_an_expired_kubernetes_token_means_a_new_login(vault: VaultStandIn, tmp_path: Path) -> None:
    vault.add_kubernetes_role("eg-gateway", "sa-jwt-abc", ttl=1.0)
    vault.put_v2(SECRET, {"password": "alice-k8s-pass"})
    resolver = gateway(
        vault,
        tmp_path,
        auth="kubernetes",
        role="eg-gateway",
        kubernetes_jwt_file=write(tmp_path, "sa-token", "sa-jwt-abc"),
        settings=ResolverSettings(cache_ttl=0.05, max_stale=0),
    )
    assert users_of(hook(password_from(), resolver=resolver)) == {"alice": sha("alice-k8s-pass")}
    time.sleep(1.2)  # the login's token has expired in Vault
    result = hook(password_from(), resolver=resolver)
    assert result.errors == ()
    assert users_of(result) == {"alice": sha("alice-k8s-pass")}
    assert vault.count("auth/kubernetes/login") == 2


@pytest.mark.parametrize("method", ["kubernetes", "approle"])
def test_a_revoked_login_token_means_a_new_login_on_the_403(
    vault: VaultStandIn, tmp_path: Path, method: str
) -> None:
    if method == "kubernetes":
        vault.add_kubernetes_role("eg-gateway", "sa-jwt-abc")
        auth: dict[str, Any] = {
            "role": "eg-gateway",
            "kubernetes_jwt_file": write(tmp_path, "sa-token", "sa-jwt-abc"),
        }
    else:
        vault.add_approle("eg-role-id", "eg-secret-id")
        auth = {
            "approle_role_id": "eg-role-id",
            "approle_secret_id_file": write(tmp_path, "secret-id", "eg-secret-id"),
        }
    vault.put_v2(SECRET, {"password": "alice-login-pass"})
    resolver = gateway(
        vault, tmp_path, auth=method, settings=ResolverSettings(cache_ttl=0.05, max_stale=0), **auth
    )
    assert users_of(hook(password_from(), resolver=resolver)) == {"alice": sha("alice-login-pass")}
    for token in vault.tokens():
        if token != ROOT_TOKEN:
            vault.revoke_token(token)  # revoked mid-run, long before its TTL
    time.sleep(0.1)
    result = hook(password_from(), resolver=resolver)
    assert result.errors == ()
    assert users_of(result) == {"alice": sha("alice-login-pass")}
    assert vault.count(f"auth/{method}/login") == 2


# --- When Vault fails: the policy's users are denied, nobody else is affected -----------


def _lacks_the_path(vault: VaultStandIn) -> None:
    vault.add_token("narrow-token", policies=["secret/data/gateways/other/"])


FAULTS = {
    "403 token lacks the path": (_lacks_the_path, "denied the server read access"),
    "404 missing secret": (
        lambda vault: vault.put_v2("gateways/default/else", {"password": "x"}),
        "has no secret at",
    ),
    "404 missing key": (
        lambda vault: vault.put_v2(SECRET, {"passwd": "alice-typo-pass"}),
        "has no key 'password'",
    ),
    "503 sealed": (lambda vault: setattr(vault, "sealed", True), "sealed"),
    "429 rate limited": (lambda vault: setattr(vault, "rate_limited", True), "rate limiting"),
    "timeout": (lambda vault: setattr(vault, "delay", 1.0), "did not answer within 0.3s"),
    "connection refused": (lambda vault: vault.stop(), "cannot be reached"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_vault_failure_denies_that_policys_users_only(
    vault: VaultStandIn, tmp_path: Path, fault: str
) -> None:
    set_up, problem = FAULTS[fault]
    set_up(vault)
    token = "narrow-token" if fault.startswith("403") else ROOT_TOKEN
    resolver = gateway(
        vault,
        tmp_path,
        token=token,
        timeout=0.3,
        settings=ResolverSettings(timeout=0.3),
    )
    result = hook(password_from(), PLAIN, resolver=resolver)
    error = denied(result)
    assert problem in error.problem
    assert "alice-" not in str(error)
    assert users_of(result) == {"bob": sha("bob-password")}


# --- The cache: stale-if-error, rotation, single flight ---------------------------------


def test_the_last_good_value_serves_while_vault_is_sealed_until_max_stale(
    vault: VaultStandIn, tmp_path: Path
) -> None:
    vault.put_v2(SECRET, {"password": "alice-stale-pass"})
    resolver = gateway(vault, tmp_path, settings=ResolverSettings(cache_ttl=0.5, max_stale=0.8))
    assert users_of(hook(password_from(), resolver=resolver)) == {"alice": sha("alice-stale-pass")}

    time.sleep(0.55)  # past the TTL
    vault.sealed = True
    before = stale_serves()
    reads = vault.count(f"/v1/{KV2_PATH}")
    result = hook(password_from(), resolver=resolver)
    assert users_of(result) == {"alice": sha("alice-stale-pass")}
    assert result.errors == ()
    assert stale_serves() > before
    assert vault.count(f"/v1/{KV2_PATH}") > reads  # Vault was asked, and failed

    time.sleep(0.8)  # past TTL + max-stale
    result = hook(password_from(), PLAIN, resolver=resolver)
    assert "sealed" in denied(result).problem
    assert users_of(result) == {"bob": sha("bob-password")}


def test_a_rotated_password_is_used_after_the_ttl_without_restart(
    vault: VaultStandIn, tmp_path: Path
) -> None:
    vault.put_v2(SECRET, {"password": "alice-before-rotation"})
    resolver = gateway(vault, tmp_path, settings=ResolverSettings(cache_ttl=0.3))
    assert users_of(hook(password_from(), resolver=resolver)) == {
        "alice": sha("alice-before-rotation")
    }

    vault.put_v2(SECRET, {"password": "alice-after-rotation"})
    assert users_of(hook(password_from(), resolver=resolver)) == {
        "alice": sha("alice-before-rotation")
    }
    assert vault.count(f"/v1/{KV2_PATH}") == 1  # within the TTL: from the cache

    time.sleep(0.35)
    assert users_of(hook(password_from(), resolver=resolver)) == {
        "alice": sha("alice-after-rotation")
    }
    assert vault.count(f"/v1/{KV2_PATH}") == 2


def test_fifty_concurrent_calls_on_a_cold_cache_read_vault_once(
    vault: VaultStandIn, tmp_path: Path
) -> None:
    vault.put_v2(SECRET, {"password": "alice-flight-pass"})
    vault.delay = 0.1  # every request is slow, so the callers overlap
    resolver = gateway(vault, tmp_path)
    start = threading.Barrier(50)
    results: list[ListenerResult] = []
    failures: list[BaseException] = []

    def call() -> None:
        start.wait()
        try:
            results.append(hook(password_from(), resolver=resolver))
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=call) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert failures == []
    assert len(results) == 50
    assert all(users_of(r) == {"alice": sha("alice-flight-pass")} for r in results)
    assert vault.count(f"/v1/{KV2_PATH}") == 1


def test_two_keys_of_one_secret_are_one_read(vault: VaultStandIn, tmp_path: Path) -> None:
    vault.put_v2(SECRET, {"alice-password": "alice-shared-pass", "carol-password": "carol-pass"})
    resolver = gateway(vault, tmp_path)
    result = hook(
        password_from("alice", "alice", key="alice-password"),
        password_from("carol", "carol", key="carol-password"),
        resolver=resolver,
    )
    assert users_of(result) == {"alice": sha("alice-shared-pass"), "carol": sha("carol-pass")}
    assert vault.count(f"/v1/{KV2_PATH}") == 1


# --- The tenancy guard: checked before any request --------------------------------------


@pytest.mark.parametrize(
    ("source", "path"),
    [
        ("passwordFrom", "secret/data/gateways/team-b/x"),
        ("passwordFrom", "secret/data/other"),
        ("passwordFrom", "secret/data/gateways/team-a/../team-b/x"),
        ("passwordFrom", "secret/data/gateways/team-a"),
        ("usersFrom", "secret/data/gateways/team-b/x"),
    ],
)
def test_a_policy_cannot_read_another_namespaces_secret(
    vault: VaultStandIn, tmp_path: Path, source: str, path: str
) -> None:
    vault.put_v2("gateways/team-b/x", {"password": "team-b-pass", "eve": "team-b-pass"})
    vault.put_v2("other", {"password": "other-pass"})
    resource = (
        password_from("sneaky", "eve", "team-a", path=path)
        if source == "passwordFrom"
        else users_from("sneaky", "team-a", path=path)
    )
    result = hook(resource, PLAIN, resolver=gateway(vault, tmp_path))
    denied(result, "sneaky", TenancyError, f"spec.{source}.vault.path")
    assert users_of(result) == {"bob": sha("bob-password")}
    assert vault.count() == 0  # not even a token lookup


# --- Server settings -------------------------------------------------------------------


def serve_settings(*args: str) -> Any:
    command = cli_main.commands["serve"]
    with command.make_context("serve", list(args)) as ctx:
        return server_settings(ctx.params)


def test_vault_settings_come_from_vault_addr_and_vault_namespace(
    vault: VaultStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert serve_settings().vault is None  # no VAULT_ADDR: no Vault store

    vault.add_token("team-token", namespace="team-ns")
    vault.put_v2(SECRET, {"password": "alice-cli-pass"}, namespace="team-ns")
    monkeypatch.setenv("VAULT_ADDR", vault.url)
    monkeypatch.setenv("VAULT_NAMESPACE", "team-ns")
    monkeypatch.setenv("VAULT_TOKEN", "team-token")
    settings = serve_settings()
    assert settings.vault is not None
    assert settings.vault.addr == vault.url
    assert settings.vault.namespace == "team-ns"
    assert settings.vault.auth == "token"

    resolver = CredentialResolver(settings.resolver, {"vault": VaultStore(settings.vault)})
    assert users_of(hook(password_from(), resolver=resolver)) == {"alice": sha("alice-cli-pass")}

    flags = serve_settings("--vault-addr", "http://vault.flag:8200", "--vault-namespace", "ops")
    assert flags.vault is not None
    assert (flags.vault.addr, flags.vault.namespace) == ("http://vault.flag:8200", "ops")
