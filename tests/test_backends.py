"""The credential backends' own rules: stored values, the cache's timeline, the guard.

Stores are exercised for real in test_backend_vault.py and test_backend_aws.py; here the
cache is driven by a counting fetch function and a clock the test moves, so its
timeline (fresh, stale, denied) can be shown step by step without waiting.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from backends import CredentialResolver, ResolverSettings
from backends.cache import ERROR_TTL, SecretCache
from backends.stores import StoredSecret, StoreError, StoreOutcome
from backends.tenancy import check_template, tenancy_problem
from backends.values import StoredValueError, password_credential, user_credentials
from compiler.errors import (
    MalformedPolicyError,
    PlaintextForbiddenError,
    TenancyError,
    UnresolvedCredentialError,
    UnsupportedHashError,
)
from compiler.memo import BoundedMemo
from compiler.model import AwsSecretRef, CredentialKind, PasswordFrom, UsersFrom, VaultRef
from compiler.parse import parse_resource
from compiler.pipeline import load_policies
from compiler.schemes import scheme_of
from compiler.users import Resolved, compile_users, each
from tests.support.builders import policy
from tests.support.compile import hook, users_of
from tests.support.secrets import sha

VAULT = {"vault": {"path": "secret/data/gateways/default/eg", "key": "password"}}
AWS = {"awsSecretsManager": {"secretId": "gateways/default/eg"}}


# --- The policy API ---------------------------------------------------------------------


def test_password_from_vault_and_users_from_aws_parse_into_store_references() -> None:
    parsed = parse_resource(policy(password=None, passwordFrom=VAULT))
    assert parsed.credentials == PasswordFrom(  # type: ignore[union-attr]
        "user", VaultRef("secret/data/gateways/default/eg", "kv-v2", "password", None)
    )
    parsed = parse_resource(policy(username=None, password=None, usersFrom=AWS))
    assert parsed.credentials == UsersFrom(AwsSecretRef("gateways/default/eg"))  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"passwordFrom": VAULT}, "spec"),  # password and passwordFrom
        ({"password": None}, "spec"),  # no source at all
        ({"password": None, "usersFrom": AWS}, "spec.username"),  # usersFrom with a username
        (
            {"password": None, "passwordFrom": {"vault": {"path": "secret/data/x"}}},
            "spec.passwordFrom.vault.key",
        ),
        ({"password": None, "passwordFrom": {**VAULT, **AWS}}, "spec.passwordFrom"),
        (
            {"password": None, "passwordFrom": {"vault": {**VAULT["vault"], "version": 0}}},
            "spec.passwordFrom.vault.version",
        ),
        (
            {
                "password": None,
                "passwordFrom": {"vault": {**VAULT["vault"], "engine": "kv-v1", "version": 2}},
            },
            "spec.passwordFrom.vault.version",
        ),
        (
            {"password": None, "passwordFrom": {"vault": {**VAULT["vault"], "engine": "kv-v3"}}},
            "spec.passwordFrom.vault.engine",
        ),
        (
            {
                "password": None,
                "passwordFrom": {
                    "awsSecretsManager": {"secretId": "x", "versionStage": "A", "versionId": "B"}
                },
            },
            "spec.passwordFrom.awsSecretsManager",
        ),
        (
            {
                "password": None,
                "passwordFrom": {"awsSecretsManager": {"secretId": "x", "region": "eu"}},
            },
            "spec.passwordFrom.awsSecretsManager.region",
        ),
    ],
    ids=[
        "two sources",
        "no source",
        "usersFrom with username",
        "vault without key",
        "two stores",
        "version 0",
        "version on kv-v1",
        "unknown engine",
        "stage and id",
        "unknown aws field",
    ],
)
def test_a_policy_names_its_credentials_in_exactly_one_way(
    spec: dict[str, Any], field: str
) -> None:
    with pytest.raises(MalformedPolicyError) as caught:
        parse_resource(policy(**spec))
    assert caught.value.field == field


# --- What a stored value may be -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "scheme"),
    [
        ("p@ssw0rd", None),
        ("$not a hash", None),
        (sha("p@ssw0rd"), "ldap_sha1"),
        ("$2y$05$bvIG6Nmid91Mu9RcmmWZfO5HJIMCT8riNW0hEp8f6/FuA2/mHZFpe", "bcrypt"),
        ("$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/", "apr_md5_crypt"),
        ("$6$rounds=5000$salt$hash", "sha512_crypt"),
        ("$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7", "crypt"),
        ("{SSHA}abcdefghijklmnopqrstuvwxyz012345", "ldap_salted_sha1"),
        ("{CRYPT}$1$abc", "LDAP {CRYPT}"),
        ("{sha}" + sha("p@ssw0rd")[5:], "LDAP {sha}"),  # Envoy's prefix is upper case only
        ("abzlUXK5ed5rs", None),  # 13 characters: in a map, a password like any other
    ],
)
def test_stored_values_are_plain_passwords_sha_hashes_or_named_unsupported_hashes(
    value: str, scheme: str | None
) -> None:
    assert scheme_of(value) == scheme


@pytest.mark.parametrize(
    ("value", "scheme"),
    [
        (sha("p@ssw0rd"), "ldap_sha1"),
        ("abzlUXK5ed5rs", "crypt"),  # DES crypt, `htpasswd -d`
        ("_J9..CCCCXBrJUJV154M", "crypt"),  # BSDi extended DES crypt
        ("p@ssw0rd", "unknown"),
        ("", "unknown"),
    ],
)
def test_in_htpasswd_text_every_value_is_a_hash_never_a_password(value: str, scheme: str) -> None:
    assert scheme_of(value, CredentialKind.HASHED) == scheme


def test_a_des_crypt_line_of_htpasswd_text_denies_that_user_and_keeps_the_others() -> None:
    vault = VaultRef("secret/data/gateways/default/users", key="htpasswd")
    text = f"alice:abzlUXK5ed5rs\nbob:{sha('pw-b')}\ncarol:p@ssw0rd\n"
    users = user_credentials({"htpasswd": text}, vault, "spec.usersFrom")
    table = compile_users([Resolved(parse_resource(policy()), users)])
    assert table.htpasswd == f"bob:{sha('pw-b')}\n"
    problems = sorted(error.problem for error in table.errors)
    assert problems == [
        "the stored value for user 'alice' is a hash Envoy cannot verify: crypt",
        "the stored value for user 'carol' is a hash Envoy cannot verify: not in any known "
        "scheme (htpasswd text holds hashes, not passwords)",
    ]
    assert all("abzlUXK5ed5rs" not in str(error) for error in table.errors)


def test_users_from_a_map_an_htpasswd_text_and_a_json_string() -> None:
    vault = VaultRef("secret/data/gateways/default/users")
    users = user_credentials({"alice": "pw-a", "bob": sha("pw-b")}, vault, "spec.usersFrom")
    assert [(c.username, c.scheme) for c in each(users)] == [("alice", None), ("bob", "ldap_sha1")]
    text = f"# team\nalice:{sha('pw-a')}\n\ncarol:{sha('pw-c')}\n"
    users = user_credentials(
        {"htpasswd": text}, VaultRef(vault.path, key="htpasswd"), "spec.usersFrom"
    )
    assert users.usernames == ("alice", "carol")
    aws = AwsSecretRef("gateways/default/users")
    assert user_credentials('{"dave": "pw-d"}', aws, "f").usernames == ("dave",)
    assert user_credentials(text, aws, "f").usernames == ("alice", "carol")


@pytest.mark.parametrize(
    ("document", "ref"),
    [
        ({"user": "pw"}, VaultRef("secret/data/x", key="password")),
        ("not json", AwsSecretRef("x", key="password")),
        ('{"broken": ', AwsSecretRef("x", key="password")),
        ({"password": 42}, VaultRef("secret/data/x", key="password")),
    ],
    ids=["missing vault key", "aws key in plain text", "invalid json", "not a string"],
)
def test_a_secret_without_the_value_the_reference_names_is_an_error_that_quotes_nothing(
    document: Any, ref: Any
) -> None:
    with pytest.raises(StoredValueError) as caught:
        password_credential(document, ref, "user", "spec.passwordFrom")
    assert "pw" not in str(caught.value).replace("password", "")


# --- The tenancy guard ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "allowed"),
    [
        (VaultRef("secret/data/gateways/team-a/eg"), True),
        (VaultRef("secret/data/gateways/team-a/sub/eg"), True),
        (VaultRef("secret/data/gateways/team-b/eg"), False),
        (VaultRef("secret/data/gateways/team-a/../team-b/eg"), False),
        (VaultRef("secret/data/gateways/team-a//eg"), False),
        (VaultRef("secret/data/gateways/team-a/"), False),
        (VaultRef("secret/data/gateways/team-ab/eg"), False),
        (VaultRef("secret/data/gateways/team-a/eg?version=1"), False),
        (AwsSecretRef("gateways/team-a/eg"), True),
        (
            AwsSecretRef(
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:gateways/team-a/eg-AbCdEf"
            ),
            True,
        ),
        (
            AwsSecretRef("arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf"),
            False,
        ),
        (AwsSecretRef("gateways/team-b/eg"), False),
        (AwsSecretRef("prod/database"), False),
    ],
)
def test_a_policy_reads_only_under_its_own_namespace(ref: Any, allowed: bool) -> None:
    problem = tenancy_problem(
        ref, "team-a", "secret/data/gateways/{namespace}/", "gateways/{namespace}/"
    )
    assert (problem is None) == allowed, problem


@pytest.mark.parametrize(
    "template",
    ["secret/data/gateways/", "secret/data/{namespace}", "s/{namespace}/{ns}/", "s/{namespace/"],
)
def test_a_template_that_cannot_confine_a_namespace_is_refused(template: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        check_template(template)


class RecordingStore:
    """A store that hands out one fixed document and records what it was asked for."""

    def __init__(self, name: str, document: Any) -> None:
        self.name, self.document = name, document
        self.fetched: list[Any] = []

    def fetch(self, ref: Any) -> StoredSecret:
        self.fetched.append(ref)
        return StoredSecret(self.document, "1")

    def version(self, ref: Any) -> str:
        return "1"

    def close(self) -> None:
        pass


def test_a_reference_outside_the_namespace_is_refused_before_any_request() -> None:
    store = RecordingStore("vault", {"password": "pw-stolen"})
    resolver = CredentialResolver(stores={"vault": store})
    outside = {"vault": {"path": "secret/data/gateways/team-b/eg", "key": "password"}}
    result = hook(
        policy("thief", "mallory", None, "team-a", passwordFrom=outside),
        policy(),
        resolver=resolver,
    )
    assert list(users_of(result)) == ["user"]
    error = result.errors[0]
    assert isinstance(error, TenancyError) and error.field == "spec.passwordFrom.vault.path"
    assert store.fetched == []


def test_forbid_plaintext_denies_policies_with_a_password_in_them() -> None:
    store = RecordingStore("vault", {"password": "pw-from-vault"})
    resolver = CredentialResolver(ResolverSettings(forbid_plaintext=True), {"vault": store})
    result = hook(policy(), policy("vaulted", "alice", None, passwordFrom=VAULT), resolver=resolver)
    users = users_of(result)
    assert list(users) == ["alice"]
    assert users["alice"] == sha("pw-from-vault")
    error = result.errors[0]
    assert isinstance(error, PlaintextForbiddenError) and error.field == "spec.password"


def test_a_store_nobody_configured_denies_its_users() -> None:
    result = hook(policy("vaulted", "alice", None, passwordFrom=VAULT))
    assert users_of(result) == {}
    assert isinstance(result.errors[0], UnresolvedCredentialError)
    assert "no vault store is configured" in str(result.errors[0])


def test_an_unsupported_stored_hash_denies_that_user_and_names_the_scheme() -> None:
    bcrypt = "$2y$05$bvIG6Nmid91Mu9RcmmWZfO5HJIMCT8riNW0hEp8f6/FuA2/mHZFpe"
    store = RecordingStore("vault", {"alice": bcrypt, "bob": sha("pw-bob")})
    resolver = CredentialResolver(stores={"vault": store})
    users_from = {"vault": {"path": "secret/data/gateways/default/users"}}
    result = hook(policy("team", None, None, usersFrom=users_from), resolver=resolver)
    assert list(users_of(result)) == ["bob"]
    (error,) = result.errors
    assert isinstance(error, UnsupportedHashError)
    assert "'alice'" in str(error) and "bcrypt" in str(error) and "{SHA}" in str(error)
    assert bcrypt not in str(error)


# --- The cache: fresh, single flight, stale-if-error, denied -----------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Fetches:
    """Counts fetches; answers with `value`, or raises while `failing`."""

    def __init__(self, value: str = "v1", delay: float = 0.0) -> None:
        self.value, self.delay, self.failing, self.count = value, delay, False, 0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            self.count += 1
        time.sleep(self.delay)
        if self.failing:
            raise StoreError(
                "vault", StoreOutcome.UNAVAILABLE, "Vault is sealed or not initialised"
            )
        return self.value


def stale_serves() -> float:
    return (
        REGISTRY.get_sample_value("extension_server_secret_stale_serves_total", {"store": "vault"})
        or 0.0
    )


def test_one_fetch_serves_fifty_concurrent_callers() -> None:
    cache = SecretCache(60, 900, wait=5)
    fetch = Fetches(delay=0.2)
    start = threading.Barrier(50)
    results: list[str] = []

    def caller() -> None:
        start.wait()
        results.append(cache.get("secret/data/x", "vault", fetch))

    threads = [threading.Thread(target=caller) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["v1"] * 50
    assert fetch.count == 1


def test_while_one_caller_refreshes_from_a_slow_store_the_others_get_the_last_value() -> None:
    """Only the caller that asks the store waits: a slow store does not queue every call
    behind it (the soak saw 16 calls/s when AWS was slower than the timeout)."""
    clock = Clock()
    cache = SecretCache(ttl=60, max_stale=900, wait=5, clock=clock)
    fetch = Fetches("v1")
    assert cache.get("k", "vault", fetch) == "v1"
    clock.now += 61  # past the TTL: the next get refreshes
    fetch.value, fetch.delay = "v2", 1.0
    refreshed: list[str] = []
    leader = threading.Thread(target=lambda: refreshed.append(cache.get("k", "vault", fetch)))
    leader.start()
    while fetch.count < 2:  # the refresh is in flight
        time.sleep(0.01)
    started = time.monotonic()
    assert cache.get("k", "vault", fetch) == "v1"  # at once, not after the store's second
    assert time.monotonic() - started < 0.5
    leader.join()
    assert refreshed == ["v2"] and fetch.count == 2


def test_a_revoked_secret_is_not_served_to_callers_that_find_a_refresh_in_flight() -> None:
    """A deleted secret is a revocation: once the store said so, the last value is gone,
    also for a caller that arrives while the next request is still out."""
    clock = Clock()
    cache = SecretCache(ttl=60, max_stale=900, wait=5, clock=clock)
    assert cache.get("k", "vault", lambda: "v1") == "v1"
    clock.now += 61

    def gone() -> str:
        time.sleep(0.3)
        raise StoreError("vault", StoreOutcome.NOT_FOUND, "no secret at that path")

    with pytest.raises(StoreError):
        cache.get("k", "vault", gone)
    clock.now += ERROR_TTL + 1  # the failure is forgotten: the next get asks again
    outcomes: list[str] = []

    def ask() -> None:
        try:
            outcomes.append(cache.get("k", "vault", gone))
        except StoreError as error:
            outcomes.append(error.outcome)

    asking = threading.Thread(target=ask)
    asking.start()
    time.sleep(0.1)  # that request is in flight
    with pytest.raises(StoreError):
        cache.get("k", "vault", gone)
    asking.join()
    assert outcomes == [StoreOutcome.NOT_FOUND]


def test_after_a_newer_version_was_seen_callers_wait_for_it() -> None:
    """The rotation watcher's invalidation: the re-translation must get the new value."""
    cache = SecretCache(ttl=60, max_stale=900, wait=5)
    fetch = Fetches("v1")
    assert cache.get("k", "vault", fetch) == "v1"
    cache.invalidate("k")
    fetch.value, fetch.delay = "v2", 0.3
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get("k", "vault", fetch)))
        for _ in range(5)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["v2"] * 5 and fetch.count == 2


def test_the_cache_timeline_fresh_refreshed_stale_then_denied() -> None:
    clock = Clock()
    cache = SecretCache(ttl=60, max_stale=900, wait=5, clock=clock)
    fetch = Fetches()
    get: Callable[[], str] = lambda: cache.get("k", "vault", fetch)  # noqa: E731

    assert get() == "v1" and fetch.count == 1
    clock.now += 59
    assert get() == "v1" and fetch.count == 1  # fresh: no request

    fetch.value = "v2"
    clock.now += 2
    assert get() == "v2" and fetch.count == 2  # past the TTL: refreshed (a rotation)

    fetch.failing = True
    before = stale_serves()
    clock.now += 61
    assert get() == "v2" and fetch.count == 3  # the store fails: the last good value serves
    assert stale_serves() == before + 1
    clock.now += 1
    assert get() == "v2" and fetch.count == 3  # the failure is remembered for a moment
    clock.now += ERROR_TTL
    assert get() == "v2" and fetch.count == 4  # then asked again

    clock.now = 1000 + 61 + 60 + 900 + 1  # past TTL + max-stale of the last good value
    with pytest.raises(StoreError):
        get()

    fetch.failing = False
    clock.now += ERROR_TTL
    assert get() == "v2"  # the store is back: served again


@pytest.mark.parametrize("outcome", [StoreOutcome.NOT_FOUND, StoreOutcome.FORBIDDEN])
def test_a_deleted_secret_or_revoked_access_denies_at_once_without_a_stale_serve(
    outcome: str,
) -> None:
    clock = Clock()
    cache = SecretCache(ttl=60, max_stale=900, wait=5, clock=clock)
    assert cache.get("k", "vault", lambda: "v1") == "v1"
    clock.now += 61

    def revoked() -> str:
        raise StoreError("vault", outcome, "Vault has no secret at secret/data/x")

    with pytest.raises(StoreError):
        cache.get("k", "vault", revoked)


def test_without_any_good_value_a_failing_store_denies() -> None:
    fetch = Fetches()
    fetch.failing = True
    with pytest.raises(StoreError, match="sealed"):
        SecretCache(60, 900, wait=5).get("k", "vault", fetch)


def traceback_depth(error: BaseException) -> int:
    depth, tb = 0, error.__traceback__
    while tb is not None:
        depth, tb = depth + 1, tb.tb_next
    return depth


def test_a_remembered_failure_reaches_each_caller_without_the_others_frames() -> None:
    """A failure is remembered for ERROR_TTL and given to every call meanwhile; the soak
    found one shared exception growing by each caller's frames (whole hook calls)."""
    cache = SecretCache(60, 900, wait=5)
    fetch = Fetches()
    fetch.failing = True
    depths = []
    for _ in range(200):
        with pytest.raises(StoreError) as caught:
            cache.get("k", "vault", fetch)
        depths.append(traceback_depth(caught.value))
    assert fetch.count == 1  # remembered: one request for all 200
    assert max(depths) == depths[0] < 10


def test_a_failed_fetch_that_many_callers_waited_for_keeps_none_of_their_frames() -> None:
    """Every caller waits on the fetch in flight (the one that asked the store too, since
    fetches run on the store's own threads). Raising the one failure in each of them would
    chain every caller's frames, whole calls, to the failure that is then remembered: the
    quick soak saw the server's memory nearly double."""
    cache = SecretCache(60, 900, wait=5)
    fetch = Fetches(delay=0.2)
    fetch.failing = True
    errors: list[BaseException] = []

    def caller() -> None:
        try:
            cache.get("k", "vault", fetch)
        except StoreError as error:
            errors.append(error)

    callers = [threading.Thread(target=caller) for _ in range(20)]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join()
    assert fetch.count == 1 and len(errors) == 20
    lookup = cache.start("k", "vault", fetch)  # the failure, as remembered for the next calls
    assert lookup.error is not None
    assert lookup.error.__traceback__ is None
    assert len({id(error) for error in errors}) == 20  # each caller its own exception


def test_a_policy_that_keeps_failing_resolves_to_the_same_value_key_without_frames() -> None:
    """Memos key on values: a policy failing the same way has the same key at every call,
    and its error holds no frames (it may stay in memos for a while)."""
    resolver = CredentialResolver()  # no store configured: every call fails the same way
    ref = {"vault": {"path": "secret/data/gateways/default/x", "key": "password"}}
    raw = [policy("stored", "sam", None, passwordFrom=ref)]
    first, second = (load_policies(raw, resolver).resolved[0] for _ in range(2))
    assert first.key == second.key
    assert first.key.source[:2] == ("failed", "UnresolvedCredentialError")
    assert first.error is not None
    assert first.error.__traceback__ is None and first.error.__context__ is None


def test_what_was_built_from_a_superseded_key_is_let_go_at_once() -> None:
    """A memo entry names the value keys it was built from; retiring one drops the entry,
    and with it the last reference to what it held."""
    memo: BoundedMemo[str, Thing] = BoundedMemo(1 << 20)
    kept, other = Thing(), Thing()
    memo.put("table-v1", kept, parts=["alice@v1", "bob@v1"])
    memo.put("table-bob", other, parts=["bob@v1"])
    watch = weakref.ref(kept)
    del kept
    memo.retire("alice@v1")
    gc.collect()
    assert watch() is None and memo.get("table-v1") is None
    assert memo.get("table-bob") is other  # built from bob alone: still good
    memo.retire("bob@v1")
    assert len(memo) == 0


class Thing:
    """An object that can be weakly referenced, standing for a table or a listener."""


def test_a_revision_longer_than_the_crd_allows_is_refused() -> None:
    with pytest.raises(MalformedPolicyError) as caught:
        parse_resource(policy(credentialsRevision="r" * 129))
    assert caught.value.field == "spec.credentialsRevision"
    assert parse_resource(policy(credentialsRevision="r" * 128)).credentials_revision == "r" * 128  # type: ignore[union-attr]
