"""Passwords in AWS Secrets Manager, as a user meets them: given this secret and this policy,
the hook admits (or denies) these users.

Real parts only: moto in HTTP server mode on 127.0.0.1 (tests/support/aws.py), the real
boto3 and the real AwsSecretsManagerStore behind the real CredentialResolver and
compiler. Credentials are dummies set in the environment; nothing talks to AWS. Request
counts are taken at the moto server: what reached "AWS", not what the client meant to send.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from passlib.hash import apr_md5_crypt
from prometheus_client import REGISTRY

from backends import CredentialResolver, ResolverSettings
from backends.aws import AwsSecretsManagerStore, AwsSettings
from backends.stores import StoreError, StoreOutcome
from compiler.errors import TenancyError, UnresolvedCredentialError, UnsupportedHashError
from compiler.htpasswd import parse_like_envoy
from compiler.model import AwsSecretRef
from compiler.pipeline import ListenerResult, load_policies
from server import logs
from server.app import ExtensionServer, ServerSettings
from server.demo.gateway import GatewayStandIn
from server.logs import PAYLOAD_LOGGERS
from server.service import CallLimits
from tests.support.aws import ACCOUNT, REGION, MotoServer, dummy_aws_environment
from tests.support.builders import http_listener, managers, our_filter, policy
from tests.support.compile import hook, users_of
from tests.support.secrets import remember, sha

TEAM = "team-a"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/reader"
BCRYPT = "$2y$05$abcdefghijklmnopqrstuu5Z3S2b6BdVUjSpGBUrQW8ZQ6ApHdl3G"
# botocore logs request and response bodies (SecretString!) at DEBUG, and the suite runs
# with the root logger at DEBUG: see test_debug_logging_does_not_write_a_fetched_password.


# --- the scene: moto, dummy credentials, and the hook -------------------------------------


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def aws(moto: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[MotoServer]:
    """moto, emptied, and an environment holding dummy credentials and nothing else of AWS."""
    dummy_aws_environment(monkeypatch, tmp_path)
    moto.reset()
    yield moto
    moto.reset()  # moto's IAM switch is per process: never leave it on for the next test


def create_secret(aws: MotoServer, name: str, value: str, *passwords: str) -> dict[str, Any]:
    """Store `value` as the SecretString of a new secret; the logs check watches for it."""
    remember(value, *passwords)
    return dict(aws.secrets_client().create_secret(Name=name, SecretString=value))


def rotate(aws: MotoServer, name: str, value: str) -> dict[str, Any]:
    """A new AWSCURRENT version (the previous one becomes AWSPREVIOUS)."""
    remember(value)
    return dict(aws.secrets_client().put_secret_value(SecretId=name, SecretString=value))


def store(endpoint_url: str, timeout: float = 2.0, **settings: Any) -> AwsSecretsManagerStore:
    """The server's store, as `--aws-region us-east-1 --aws-endpoint-url ...` configures it."""
    return AwsSecretsManagerStore(
        AwsSettings(region=REGION, endpoint_url=endpoint_url, timeout=timeout, **settings)
    )


def resolver(
    aws_store: AwsSecretsManagerStore,
    cache_ttl: float = 60.0,
    max_stale: float = 900.0,
    timeout: float = 2.0,
) -> CredentialResolver:
    settings = ResolverSettings(cache_ttl=cache_ttl, max_stale=max_stale, timeout=timeout)
    return CredentialResolver(settings, {"aws": aws_store})


def aws_ref(secret_id: str, **fields: str) -> dict[str, Any]:
    return {"awsSecretsManager": {"secretId": secret_id, **fields}}


def password_from(secret_id: str, user: str = "alice", name: str = "alice", **fields: str) -> bytes:
    return policy(
        name,
        username=user,
        password=None,
        namespace=TEAM,
        passwordFrom=aws_ref(secret_id, **fields),
    )


def users_from(secret_id: str, name: str = "staff", **fields: str) -> bytes:
    return policy(
        name, username=None, password=None, namespace=TEAM, usersFrom=aws_ref(secret_id, **fields)
    )


def only_error(result: ListenerResult) -> Any:
    (error,) = result.errors
    return error


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- passwordFrom ---------------------------------------------------------------------------


def test_password_in_a_plain_secret_string_admits_the_user(aws: MotoServer) -> None:
    create_secret(aws, "gateways/team-a/alice", "s3cret!")

    result = hook(
        password_from("gateways/team-a/alice"), resolver=resolver(store(aws.endpoint_url))
    )

    assert users_of(result) == {"alice": sha("s3cret!")}
    assert result.errors == ()


def test_password_under_a_json_key_admits_the_user(aws: MotoServer) -> None:
    document = {"username": "ignored", "password": "from-json", "other": "x"}
    create_secret(aws, "gateways/team-a/db", json.dumps(document), "from-json")

    result = hook(
        password_from("gateways/team-a/db", key="password"),
        resolver=resolver(store(aws.endpoint_url)),
    )

    assert users_of(result) == {"alice": sha("from-json")}


def test_a_stored_sha_hash_is_given_to_envoy_as_is(aws: MotoServer) -> None:
    """A team can keep even the password out of the gateway's reach."""
    create_secret(aws, "gateways/team-a/alice", sha("kept-away"))

    result = hook(
        password_from("gateways/team-a/alice"), resolver=resolver(store(aws.endpoint_url))
    )

    assert users_of(result) == {"alice": sha("kept-away")}


@pytest.mark.parametrize(
    ("stored", "scheme"),
    [(BCRYPT, "bcrypt"), (apr_md5_crypt.hash("s3cret!"), "apr1")],
    ids=["bcrypt", "apr1"],
)
def test_a_stored_hash_envoy_cannot_verify_is_rejected_naming_the_user(
    aws: MotoServer, stored: str, scheme: str
) -> None:
    create_secret(aws, "gateways/team-a/alice", stored)

    result = hook(
        password_from("gateways/team-a/alice"), resolver=resolver(store(aws.endpoint_url))
    )

    assert users_of(result) == {}
    error = only_error(result)
    assert isinstance(error, UnsupportedHashError)
    assert "'alice'" in error.problem and scheme in error.problem
    assert "Envoy only verifies {SHA}" in error.fix
    assert stored not in str(error)


# --- usersFrom ------------------------------------------------------------------------------


def test_users_from_a_json_object_admits_every_user(aws: MotoServer) -> None:
    users = {"alice": "alice-pw", "bob": sha("bob-pw")}
    create_secret(aws, "gateways/team-a/staff", json.dumps(users), "alice-pw")

    result = hook(users_from("gateways/team-a/staff"), resolver=resolver(store(aws.endpoint_url)))

    assert users_of(result) == {"alice": sha("alice-pw"), "bob": sha("bob-pw")}


def test_users_from_htpasswd_text_admits_every_user(aws: MotoServer) -> None:
    text = f"# made with htpasswd -nbs\nalice:{sha('alice-pw')}\nbob:{sha('bob-pw')}\n"
    create_secret(aws, "gateways/team-a/staff", text)

    result = hook(users_from("gateways/team-a/staff"), resolver=resolver(store(aws.endpoint_url)))

    assert users_of(result) == {"alice": sha("alice-pw"), "bob": sha("bob-pw")}


def test_users_from_htpasswd_text_under_a_json_key(aws: MotoServer) -> None:
    document = {"htpasswd": f"alice:{sha('alice-pw')}\ncarol:{sha('carol-pw')}\n", "note": "x"}
    create_secret(aws, "gateways/team-a/staff", json.dumps(document))

    result = hook(
        users_from("gateways/team-a/staff", key="htpasswd"),
        resolver=resolver(store(aws.endpoint_url)),
    )

    assert users_of(result) == {"alice": sha("alice-pw"), "carol": sha("carol-pw")}


# --- versions and rotation -----------------------------------------------------------------


def test_version_stage_awsprevious_reads_the_value_before_the_last_rotation(
    aws: MotoServer,
) -> None:
    create_secret(aws, "gateways/team-a/alice", "first-pw")
    rotate(aws, "gateways/team-a/alice", "second-pw")

    credentials = resolver(store(aws.endpoint_url))
    current = hook(password_from("gateways/team-a/alice"), resolver=credentials)
    previous = hook(
        password_from("gateways/team-a/alice", versionStage="AWSPREVIOUS"), resolver=credentials
    )

    assert users_of(current) == {"alice": sha("second-pw")}
    assert users_of(previous) == {"alice": sha("first-pw")}


def test_version_id_pins_one_version(aws: MotoServer) -> None:
    first = create_secret(aws, "gateways/team-a/alice", "first-pw")["VersionId"]
    rotate(aws, "gateways/team-a/alice", "second-pw")
    rotate(aws, "gateways/team-a/alice", "third-pw")

    result = hook(
        password_from("gateways/team-a/alice", versionId=first),
        resolver=resolver(store(aws.endpoint_url)),
    )

    assert users_of(result) == {"alice": sha("first-pw")}


def test_a_rotated_password_applies_after_the_cache_ttl_without_a_restart(
    aws: MotoServer,
) -> None:
    create_secret(aws, "gateways/team-a/alice", "before-rotation")
    credentials = resolver(store(aws.endpoint_url), cache_ttl=1.0, max_stale=0.0)
    alice = password_from("gateways/team-a/alice")
    assert users_of(hook(alice, resolver=credentials)) == {"alice": sha("before-rotation")}

    rotate(aws, "gateways/team-a/alice", "after-rotation")

    assert users_of(hook(alice, resolver=credentials)) == {
        "alice": sha("before-rotation")
    }  # inside TTL
    assert aws.count("secretsmanager", "GetSecretValue") == 1
    time.sleep(1.05)
    assert users_of(hook(alice, resolver=credentials)) == {"alice": sha("after-rotation")}
    assert aws.count("secretsmanager", "GetSecretValue") == 2


# --- failures deny (fail closed), and only the policy concerned ----------------------------


def test_a_missing_secret_denies_its_users_and_leaves_other_policies_alone(
    aws: MotoServer,
) -> None:
    create_secret(aws, "gateways/team-a/carol", "carol-pw")

    result = hook(
        password_from("gateways/team-a/no-such-secret", user="alice", name="alice"),
        password_from("gateways/team-a/carol", user="carol", name="carol"),
        policy("bob", username="bob", password="bob-pw", namespace=TEAM),
        resolver=resolver(store(aws.endpoint_url)),
    )

    assert users_of(result) == {"bob": sha("bob-pw"), "carol": sha("carol-pw")}
    error = only_error(result)
    assert isinstance(error, UnresolvedCredentialError)
    assert str(error.policy) == "team-a/alice"
    assert error.field == "spec.passwordFrom.awsSecretsManager.secretId"
    assert "has no secret gateways/team-a/no-such-secret" in error.problem


def _identity(aws: MotoServer, user: str, actions: list[str]) -> dict[str, str]:
    """An IAM user allowed `actions` on every resource; its access key."""
    iam = aws.client("iam")
    iam.create_user(UserName=user)
    document = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
    }
    iam.put_user_policy(UserName=user, PolicyName="reads", PolicyDocument=json.dumps(document))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return {
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
    }


def _as(monkeypatch: pytest.MonkeyPatch, identity: dict[str, str]) -> None:
    for name, value in identity.items():
        monkeypatch.setenv(name, value)


def test_a_server_identity_iam_does_not_allow_to_read_the_secret_denies_the_users(
    aws: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto enforcing IAM: the server's user may describe secrets, not read them.

    moto answers an IAM refusal with HTTP 403 and an XML `AccessDenied` body for every
    service, also for JSON-protocol Secrets Manager, so botocore sees the code "403"
    instead of AWS's `AccessDeniedException`: the outcome label is not asserted here.
    """
    create_secret(aws, "gateways/team-a/alice", "s3cret!")
    may_read = _identity(aws, "reader", ["secretsmanager:GetSecretValue"])
    may_not = _identity(aws, "describer", ["secretsmanager:DescribeSecret"])
    aws.enforce_iam()

    _as(monkeypatch, may_not)
    denied_store = store(aws.endpoint_url)
    denied_store.client()  # credentials are taken from the environment here
    _as(monkeypatch, may_read)
    allowed_store = store(aws.endpoint_url)
    alice = password_from("gateways/team-a/alice")

    denied = hook(alice, resolver=resolver(denied_store))
    allowed = hook(alice, resolver=resolver(allowed_store))

    assert users_of(denied) == {}
    error = only_error(denied)
    assert isinstance(error, UnresolvedCredentialError)
    assert error.field == "spec.passwordFrom.awsSecretsManager.secretId"
    assert "gateways/team-a/alice" in error.problem and "s3cret!" not in str(error)
    assert users_of(allowed) == {"alice": sha("s3cret!")}  # the same secret, a reader: admitted
    readers = [r.access_key for r in aws.requests("secretsmanager", "GetSecretValue")]
    assert readers == [may_not["AWS_ACCESS_KEY_ID"], may_read["AWS_ACCESS_KEY_ID"]]


def test_secrets_manager_down_denies_the_users_with_outcome_unavailable(
    aws: MotoServer,
) -> None:
    down = MotoServer().start()
    create_secret(down, "gateways/team-a/alice", "s3cret!")
    down.stop()
    aws_store = store(down.endpoint_url, timeout=1.0)
    alice = password_from("gateways/team-a/alice")

    started = time.monotonic()
    result = hook(alice, resolver=resolver(aws_store, timeout=1.0))
    print(f"\nSecrets Manager down: the hook answered in {time.monotonic() - started:.3f}s")

    assert users_of(result) == {}
    error = only_error(result)
    assert isinstance(error, UnresolvedCredentialError)
    assert "cannot be reached" in error.problem
    with pytest.raises(StoreError) as raised:
        aws_store.fetch(AwsSecretRef("gateways/team-a/alice"))
    assert raised.value.outcome == StoreOutcome.UNAVAILABLE


def test_no_credentials_in_the_default_chain_is_an_outage_the_last_value_rides_out(
    aws: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An instance-metadata or IRSA-token hiccup is not a revocation: stale may serve."""
    create_secret(aws, "gateways/team-a/alice", "s3cret!")
    alice = password_from("gateways/team-a/alice")
    credentials = resolver(store(aws.endpoint_url), cache_ttl=0.05, max_stale=60.0)
    assert users_of(hook(alice, resolver=credentials)) == {"alice": sha("s3cret!")}

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    without = store(aws.endpoint_url)
    with pytest.raises(StoreError) as raised:
        without.fetch(AwsSecretRef("gateways/team-a/alice"))
    assert raised.value.outcome == StoreOutcome.UNAVAILABLE
    assert "no AWS credentials" in str(raised.value)

    credentials.stores["aws"] = without  # the chain breaks under the running server
    time.sleep(0.1)  # past the TTL
    stale = sample("extension_server_secret_stale_serves_total", store="aws")
    assert users_of(hook(alice, resolver=credentials)) == {"alice": sha("s3cret!")}
    assert sample("extension_server_secret_stale_serves_total", store="aws") == stale + 1


def test_secrets_manager_that_never_answers_times_out_and_denies(aws: MotoServer) -> None:
    """A host that accepts the connection and then says nothing (a hung endpoint)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        aws_store = store(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.5)

        started = time.monotonic()
        result = hook(
            password_from("gateways/team-a/alice"), resolver=resolver(aws_store, timeout=0.5)
        )
        print(f"\nSecrets Manager hung: the hook answered in {time.monotonic() - started:.3f}s")

        assert users_of(result) == {}
        assert isinstance(only_error(result), UnresolvedCredentialError)
        with pytest.raises(StoreError) as raised:
            aws_store.fetch(AwsSecretRef("gateways/team-a/alice"))
        assert raised.value.outcome == StoreOutcome.TIMEOUT


def test_the_last_good_password_serves_while_the_store_is_down_until_max_stale(
    aws: MotoServer,
) -> None:
    flaky = MotoServer().start()
    try:
        create_secret(flaky, "gateways/team-a/alice", "s3cret!")
        credentials = resolver(store(flaky.endpoint_url, timeout=1.0), cache_ttl=0.3, max_stale=0.5)
        alice = password_from("gateways/team-a/alice")
        assert users_of(hook(alice, resolver=credentials)) == {"alice": sha("s3cret!")}
        stale_before = sample("extension_server_secret_stale_serves_total", store="aws")

        time.sleep(0.35)  # past the TTL
        flaky.stop()
        still = hook(alice, resolver=credentials)

        assert users_of(still) == {"alice": sha("s3cret!")}
        assert still.errors == ()
        assert sample("extension_server_secret_stale_serves_total", store="aws") == stale_before + 1

        time.sleep(0.5)  # past TTL + max-stale
        late = hook(alice, resolver=credentials)

        assert users_of(late) == {}
        assert isinstance(only_error(late), UnresolvedCredentialError)
    finally:
        flaky.stop()


# --- the tenancy guard ---------------------------------------------------------------------


@pytest.mark.parametrize("reference", ["other-namespace", "bare-name", "arn-outside"])
def test_a_secret_outside_the_namespace_path_is_rejected_before_any_request(
    aws: MotoServer, reference: str
) -> None:
    """Policies in team-a may read gateways/team-a/... only, even when the secret exists."""
    team_b = create_secret(aws, "gateways/team-b/x", "team-b-password")
    create_secret(aws, "db-password", "the-database-password")
    secret_id = {
        "other-namespace": "gateways/team-b/x",
        "bare-name": "db-password",
        "arn-outside": team_b["ARN"],
    }[reference]
    aws.clear_requests()

    result = hook(password_from(secret_id), resolver=resolver(store(aws.endpoint_url)))

    assert users_of(result) == {}
    error = only_error(result)
    assert isinstance(error, TenancyError)
    assert error.field == "spec.passwordFrom.awsSecretsManager.secretId"
    assert "gateways/team-a/" in error.problem
    assert aws.count() == 0  # nothing reached Secrets Manager


def test_an_arn_inside_the_namespace_path_is_read(aws: MotoServer) -> None:
    arn = create_secret(aws, "gateways/team-a/alice", "pw-one-1")["ARN"]

    result = hook(password_from(arn), resolver=resolver(store(aws.endpoint_url)))

    assert users_of(result) == {"alice": sha("pw-one-1")}


# --- single flight -------------------------------------------------------------------------


def test_fifty_concurrent_translations_of_one_cold_secret_make_one_request(
    aws: MotoServer,
) -> None:
    create_secret(aws, "gateways/team-a/alice", "s3cret!")
    aws.clear_requests()
    aws.latency = 0.2  # Secrets Manager is slow today: every caller arrives while it answers
    aws_store = store(aws.endpoint_url)
    sent: list[str] = []
    aws_store.client().meta.events.register(
        "before-send.secrets-manager.*", lambda request, **_: sent.append(request.url)
    )
    credentials = resolver(aws_store)
    raw = [password_from("gateways/team-a/alice")]
    start = threading.Barrier(50)

    def translate(_: int) -> Any:
        start.wait()
        return load_policies(raw, credentials)

    misses = sample("extension_server_secret_cache_misses_total", store="aws")
    with ThreadPoolExecutor(50) as pool:
        loaded = list(pool.map(translate, range(50)))
    misses = sample("extension_server_secret_cache_misses_total", store="aws") - misses

    print(
        f"\n50 concurrent load_policies: {misses:g} found the cache cold; "
        f"{aws.count('secretsmanager', 'GetSecretValue')} GetSecretValue at moto, "
        f"{len(sent)} sent by the store"
    )
    assert all(len(item.resolved[0].credentials) == 1 for item in loaded)
    assert aws.count("secretsmanager", "GetSecretValue") == 1
    assert len(sent) == 1


def test_a_hundred_concurrent_hook_calls_on_one_cold_secret_make_one_request(
    aws: MotoServer,
) -> None:
    create_secret(aws, "gateways/team-a/alice", "s3cret!")
    aws.clear_requests()
    server = ExtensionServer(
        ServerSettings(
            host="127.0.0.1",
            port=0,
            shutdown_grace=2.0,
            aws=AwsSettings(region=REGION, endpoint_url=aws.endpoint_url, timeout=2.0),
            resolver=ResolverSettings(cache_ttl=60.0, max_stale=900.0, timeout=2.0),
            limits=CallLimits(max_concurrent_calls=None),  # 100 at once: over the default 64
        )
    )
    server.start()
    gateway = GatewayStandIn(f"127.0.0.1:{server.port}")
    alice = json.loads(password_from("gateways/team-a/alice"))
    misses = sample("extension_server_secret_cache_misses_total", store="aws")
    try:
        with ThreadPoolExecutor(100) as pool:
            listeners = list(
                pool.map(
                    lambda _: gateway.translate(http_listener(name="team-a/eg/http"), [alice]),
                    range(100),
                )
            )
    finally:
        gateway.close()
        server.stop()
    misses = sample("extension_server_secret_cache_misses_total", store="aws") - misses

    count = aws.count("secretsmanager", "GetSecretValue")
    print(
        f"\n100 concurrent PostHTTPListenerModify calls: {misses:g} found the cache cold; "
        f"{count} GetSecretValue at moto"
    )
    for listener in listeners:
        (hcm,) = managers(listener)
        assert parse_like_envoy(our_filter(hcm).users.inline_string) == {"alice": sha("s3cret!")}
    assert count == 1


# --- --aws-role-arn ------------------------------------------------------------------------


def _role(aws: MotoServer) -> None:
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    aws.client("iam").create_role(RoleName="reader", AssumeRolePolicyDocument=json.dumps(trust))


def test_with_a_role_arn_the_server_assumes_the_role_then_reads_as_it(
    aws: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The region comes from the settings (--aws-region) alone, for STS as for reads."""
    create_secret(aws, "gateways/team-a/alice", "alice-pw")
    create_secret(aws, "gateways/team-a/bob", "bob-pw")
    _role(aws)
    aws.clear_requests()
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", aws.endpoint_url)  # STS on moto too

    result = hook(
        password_from("gateways/team-a/alice", user="alice", name="alice"),
        password_from("gateways/team-a/bob", user="bob", name="bob"),
        resolver=resolver(store(aws.endpoint_url, role_arn=ROLE_ARN)),
    )

    assert users_of(result) == {"alice": sha("alice-pw"), "bob": sha("bob-pw")}
    print(f"\n--aws-role-arn: {[f'{r.service}:{r.action}' for r in aws.requests()]}")
    assert aws.count("sts", "AssumeRole") == 1  # once, for both reads
    reads = aws.requests("secretsmanager", "GetSecretValue")
    assert len(reads) == 2
    assert all(r.session_token and r.access_key != "testing" for r in reads)  # as the role


def test_a_role_the_server_may_not_assume_denies_the_users_as_forbidden(
    aws: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto enforcing IAM: the server's own user may not call sts:AssumeRole.

    STS is a query-protocol service, so moto's refusal reads exactly as AWS's does
    (code `AccessDenied`).
    """
    create_secret(aws, "gateways/team-a/alice", "alice-pw")
    _role(aws)
    _as(monkeypatch, _identity(aws, "gateway", ["secretsmanager:GetSecretValue"]))
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", aws.endpoint_url)
    aws.enforce_iam()
    aws.clear_requests()
    aws_store = store(aws.endpoint_url, role_arn=ROLE_ARN)

    result = hook(password_from("gateways/team-a/alice"), resolver=resolver(aws_store))

    assert users_of(result) == {}
    error = only_error(result)
    assert isinstance(error, UnresolvedCredentialError)
    assert "grant the server read access" in error.fix
    assert aws.count("sts", "AssumeRole") == 1  # refused, so nothing was read
    assert aws.count("secretsmanager") == 0
    with pytest.raises(StoreError) as raised:
        aws_store.fetch(AwsSecretRef("gateways/team-a/alice"))
    assert raised.value.outcome == StoreOutcome.FORBIDDEN


def test_the_region_may_come_from_aws_region_as_the_help_says(
    aws: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EKS (IRSA, Pod Identity) sets AWS_REGION; botocore alone reads AWS_DEFAULT_REGION."""
    create_secret(aws, "gateways/team-a/alice", "alice-pw")
    monkeypatch.setenv("AWS_REGION", REGION)
    aws_store = AwsSecretsManagerStore(AwsSettings(endpoint_url=aws.endpoint_url))

    result = hook(password_from("gateways/team-a/alice"), resolver=resolver(aws_store))

    assert users_of(result) == {"alice": sha("alice-pw")}


# --- logs ----------------------------------------------------------------------------------


def test_debug_logging_does_not_write_a_fetched_password(aws: MotoServer) -> None:
    create_secret(aws, "gateways/team-a/alice", "never-in-a-log")
    written = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quieted = {name: logging.getLogger(name).level for name in PAYLOAD_LOGGERS}
    try:
        for name in PAYLOAD_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)  # as a fresh server process has it
        logs.configure("debug", "logfmt", stream=written)  # extension-server --log-level debug
        result = hook(
            password_from("gateways/team-a/alice"), resolver=resolver(store(aws.endpoint_url))
        )
    finally:
        root.handlers = handlers  # the leak goes to `written` only, never to the suite's log
        root.setLevel(level)
        for name, old in quieted.items():
            logging.getLogger(name).setLevel(old)

    assert users_of(result) == {"alice": sha("never-in-a-log")}
    assert "never-in-a-log" not in written.getvalue()
