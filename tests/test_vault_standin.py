"""The Vault stand-in answers the real `hvac` client the way Vault does.

Everything here goes through `hvac` (its API helpers, or `client.adapter` for the
raw Vault HTTP paths the product reads), so the shapes and status codes are
checked against what hvac turns into results and exceptions.
"""

from __future__ import annotations

import time
from typing import Any

import hvac
import hvac.exceptions
import pytest
import requests

from tests.support.vault import KV_V1_DEFAULT_LEASE, ROOT_TOKEN, VaultStandIn


def client(
    vault: VaultStandIn,
    token: str | None = ROOT_TOKEN,
    namespace: str | None = None,
    timeout: float = 2.0,
) -> hvac.Client:
    # hvac's stubs say int; requests (which gets it) takes float seconds
    return hvac.Client(url=vault.url, token=token, namespace=namespace, timeout=timeout)  # type: ignore[arg-type]


def raw_get(c: hvac.Client, path: str, **params: Any) -> Any:
    return c.adapter.get(path, params=params)


# -- KV v2 ---------------------------------------------------------------------


def test_kv2_reads_latest_and_a_given_version(vault: VaultStandIn) -> None:
    assert vault.put_v2("apps/web", {"password": "one"}) == 1
    assert vault.put_v2("apps/web", {"password": "two"}) == 2
    c = client(vault)

    latest = c.secrets.kv.v2.read_secret_version(
        path="apps/web", mount_point="secret", raise_on_deleted_version=True
    )
    assert latest["data"]["data"] == {"password": "two"}
    meta = latest["data"]["metadata"]
    assert meta["version"] == 2
    assert meta["deletion_time"] == ""
    assert meta["destroyed"] is False
    assert meta["custom_metadata"] is None
    assert meta["created_time"].endswith("Z")
    assert latest["lease_duration"] == 0

    first = c.secrets.kv.v2.read_secret_version(
        path="apps/web", mount_point="secret", version=1, raise_on_deleted_version=True
    )
    assert first["data"]["data"] == {"password": "one"}

    raw = raw_get(c, "/v1/secret/data/apps/web", version=1)
    assert raw["data"]["data"] == {"password": "one"}
    assert raw["data"]["metadata"]["version"] == 1
    assert raw_get(c, "/v1/secret/data/apps/web")["data"]["metadata"]["version"] == 2


def test_kv2_missing_secret_or_version_is_invalid_path(vault: VaultStandIn) -> None:
    c = client(vault)
    with pytest.raises(hvac.exceptions.InvalidPath) as missing:
        c.secrets.kv.v2.read_secret_version(
            path="nope", mount_point="secret", raise_on_deleted_version=True
        )
    assert missing.value.json == {"errors": []}

    vault.put_v2("apps/web", {"password": "one"})
    with pytest.raises(hvac.exceptions.InvalidPath):
        raw_get(c, "/v1/secret/data/apps/web", version=7)


def test_kv2_deleted_version_is_404_with_its_metadata(vault: VaultStandIn) -> None:
    vault.put_v2("apps/web", {"password": "one"})
    vault.put_v2("apps/web", {"password": "two"})
    vault.delete_v2("apps/web")
    c = client(vault)

    with pytest.raises(hvac.exceptions.InvalidPath) as deleted:
        c.secrets.kv.v2.read_secret_version(
            path="apps/web", mount_point="secret", raise_on_deleted_version=True
        )
    body: Any = deleted.value.json
    assert "errors" not in body
    assert body["data"]["data"] is None
    assert body["data"]["metadata"]["version"] == 2
    assert body["data"]["metadata"]["deletion_time"] != ""

    # hvac's other mode hands the same body back instead of raising
    kept = c.secrets.kv.v2.read_secret_version(
        path="apps/web", mount_point="secret", raise_on_deleted_version=False
    )
    assert kept["data"]["data"] is None

    # older versions stay readable
    assert raw_get(c, "/v1/secret/data/apps/web", version=1)["data"]["data"] == {"password": "one"}


def test_kv2_metadata(vault: VaultStandIn) -> None:
    vault.put_v2("apps/web", {"password": "one"})
    vault.put_v2("apps/web", {"password": "two"})
    vault.delete_v2("apps/web", versions=[1])
    meta = client(vault).secrets.kv.v2.read_secret_metadata(path="apps/web", mount_point="secret")
    data = meta["data"]
    assert data["current_version"] == 2
    assert data["oldest_version"] == 0
    assert set(data["versions"]) == {"1", "2"}
    assert data["versions"]["1"]["deletion_time"] != ""
    assert data["versions"]["2"] == {
        "created_time": data["updated_time"],
        "deletion_time": "",
        "destroyed": False,
    }


def test_kv2_create_update_delete_through_hvac(vault: VaultStandIn) -> None:
    c = client(vault)
    kv2 = c.secrets.kv.v2
    written = kv2.create_or_update_secret(path="db", secret={"pw": "a"}, mount_point="secret")
    assert written["data"]["version"] == 1
    assert kv2.create_or_update_secret(path="db", secret={"pw": "b"}, cas=1)["data"]["version"] == 2
    with pytest.raises(hvac.exceptions.InvalidRequest, match="check-and-set"):
        kv2.create_or_update_secret(path="db", secret={"pw": "c"}, cas=1)

    kv2.delete_latest_version_of_secret(path="db", mount_point="secret")
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv2.read_secret_version(path="db", mount_point="secret", raise_on_deleted_version=True)
    kv2.undelete_secret_versions(path="db", versions=[2], mount_point="secret")
    assert kv2.read_secret_version(path="db", raise_on_deleted_version=True)["data"]["data"] == {
        "pw": "b"
    }
    kv2.destroy_secret_versions(path="db", versions=[2], mount_point="secret")
    with pytest.raises(hvac.exceptions.InvalidPath) as destroyed:
        raw_get(c, "/v1/secret/data/db")
    body: Any = destroyed.value.json
    assert body["data"]["metadata"]["destroyed"] is True


# -- KV v1 ---------------------------------------------------------------------


def test_kv1_read_write(vault: VaultStandIn) -> None:
    vault.put_v1("apps/web", {"password": "one"})
    c = client(vault)
    read = c.secrets.kv.v1.read_secret(path="apps/web", mount_point="kv")
    assert read["data"] == {"password": "one"}
    assert read["lease_duration"] == KV_V1_DEFAULT_LEASE
    assert read["renewable"] is False
    assert raw_get(c, "/v1/kv/apps/web")["data"] == {"password": "one"}

    # hvac reads first (404 -> POST, found -> PUT); Vault answers writes with 204
    created = c.secrets.kv.v1.create_or_update_secret(
        path="other", secret={"password": "x", "ttl": "1h"}, mount_point="kv"
    )
    assert created.status_code == 204
    updated = c.secrets.kv.v1.create_or_update_secret(
        path="other", secret={"password": "y", "ttl": "90s"}, mount_point="kv"
    )
    assert updated.status_code == 204
    assert raw_get(c, "/v1/kv/other")["lease_duration"] == 90
    assert ("POST", "/v1/kv/other", "") in vault.requests
    assert ("PUT", "/v1/kv/other", "") in vault.requests

    with pytest.raises(hvac.exceptions.InvalidPath):
        c.secrets.kv.v1.read_secret(path="missing", mount_point="kv")


# -- namespaces ----------------------------------------------------------------


def test_namespaces_isolate_secrets_and_tokens(vault: VaultStandIn) -> None:
    vault.add_token("team-token", namespace="team-a")
    vault.put_v2("db", {"pw": "root-ns"})
    vault.put_v2("db", {"pw": "team-ns"}, namespace="team-a")

    team = client(vault, token="team-token", namespace="team-a/")
    assert raw_get(team, "/v1/secret/data/db")["data"]["data"] == {"pw": "team-ns"}
    assert raw_get(client(vault), "/v1/secret/data/db")["data"]["data"] == {"pw": "root-ns"}

    with pytest.raises(hvac.exceptions.Forbidden):  # a team-a token means nothing in root
        raw_get(client(vault, token="team-token"), "/v1/secret/data/db")
    with pytest.raises(hvac.exceptions.Forbidden):  # nor a root token in team-a
        raw_get(client(vault, namespace="team-a"), "/v1/secret/data/db")

    vault.put_v2("only-root", {"pw": "x"})
    with pytest.raises(hvac.exceptions.InvalidPath):
        raw_get(team, "/v1/secret/data/only-root")
    assert vault.count("secret/data/", namespace="team-a") == 3


# -- token auth ------------------------------------------------------------------


def test_lookup_self_and_renew_self(vault: VaultStandIn) -> None:
    vault.add_token("short", policies=["secret/data/apps/*"], ttl=60)
    c = client(vault, token="short")
    data = c.auth.token.lookup_self()["data"]
    assert data["id"] == "short"
    assert 58 <= data["ttl"] <= 60
    assert data["renewable"] is True
    assert data["policies"] == ["secret/data/apps/*"]
    assert data["expire_time"].endswith("Z")

    renewed = c.auth.token.renew_self(increment="2h")["auth"]
    assert renewed["client_token"] == "short"
    assert renewed["lease_duration"] == 7200
    assert renewed["renewable"] is True
    assert renewed["policies"] == ["secret/data/apps/*"]
    assert c.auth.token.lookup_self()["data"]["ttl"] > 7000
    assert c.auth.token.renew_self()["auth"]["lease_duration"] == 60
    assert vault.renewals("short") == 2


def test_renew_errors_and_expiry(vault: VaultStandIn) -> None:
    vault.add_token("fixed", ttl=60, renewable=False)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="lease is not renewable"):
        client(vault, token="fixed").auth.token.renew_self()
    with pytest.raises(hvac.exceptions.InvalidRequest, match="invalid lease ID"):
        client(vault).auth.token.renew_self()  # no TTL, like a root token
    assert client(vault).auth.token.lookup_self()["data"]["ttl"] == 0

    vault.add_token("brief", ttl=0.05)
    c = client(vault, token="brief")
    assert c.is_authenticated()
    time.sleep(0.1)
    assert not c.is_authenticated()
    with pytest.raises(hvac.exceptions.Forbidden, match="permission denied"):
        c.auth.token.lookup_self()


# -- login methods ---------------------------------------------------------------


def test_kubernetes_login_then_read(vault: VaultStandIn) -> None:
    vault.add_kubernetes_role("web", "jwt-abc", token_policies=["secret/data/apps/"], ttl=300)
    vault.put_v2("apps/web", {"pw": "k8s"})
    c = client(vault, token=None)
    auth = c.auth.kubernetes.login("web", "jwt-abc")["auth"]
    assert auth["client_token"].startswith("hvs.")
    assert auth["lease_duration"] == 300
    assert auth["renewable"] is True
    assert auth["policies"] == ["secret/data/apps/"]
    assert c.token == auth["client_token"]  # hvac keeps the token
    assert raw_get(c, "/v1/secret/data/apps/web")["data"]["data"] == {"pw": "k8s"}
    with pytest.raises(hvac.exceptions.Forbidden):
        raw_get(c, "/v1/secret/metadata/apps/web")

    with pytest.raises(hvac.exceptions.InvalidRequest) as unknown:
        client(vault, token=None).auth.kubernetes.login("nope", "jwt-abc")
    assert unknown.value.errors == ['invalid role name "nope"']
    with pytest.raises(hvac.exceptions.Forbidden) as wrong:
        client(vault, token=None).auth.kubernetes.login("web", "jwt-xyz")
    assert wrong.value.errors == ["permission denied"]


def test_kubernetes_login_on_another_mount_and_namespace(vault: VaultStandIn) -> None:
    vault.add_kubernetes_role("web", "jwt", namespace="team-a", mount="k8s-east")
    vault.put_v2("x", {"pw": "east"}, namespace="team-a")
    c = client(vault, token=None, namespace="team-a")
    c.auth.kubernetes.login("web", "jwt", mount_point="k8s-east")
    assert raw_get(c, "/v1/secret/data/x")["data"]["data"] == {"pw": "east"}
    with pytest.raises(hvac.exceptions.Forbidden):  # no such mount in root
        client(vault, token=None).auth.kubernetes.login("web", "jwt", mount_point="k8s-east")


def test_approle_login_then_read(vault: VaultStandIn) -> None:
    vault.add_approle("role-1", "secret-1", token_policies=["kv/"], ttl=120)
    vault.put_v1("apps/web", {"pw": "kv-one-password"})
    c = client(vault, token=None)
    auth = c.auth.approle.login(role_id="role-1", secret_id="secret-1")["auth"]
    assert auth["lease_duration"] == 120
    assert c.secrets.kv.v1.read_secret("apps/web", mount_point="kv")["data"] == {
        "pw": "kv-one-password"
    }
    assert auth["client_token"] in vault.tokens()

    for role_id, secret_id in (("role-1", "wrong"), ("nope", "secret-1")):
        with pytest.raises(hvac.exceptions.InvalidRequest) as bad:
            client(vault, token=None).auth.approle.login(role_id=role_id, secret_id=secret_id)
        assert bad.value.errors == ["invalid role or secret ID"]


# -- errors and faults -----------------------------------------------------------


def test_error_shapes_map_to_hvac_exceptions(vault: VaultStandIn) -> None:
    vault.put_v2("apps/web", {"pw": "x"})
    vault.add_token("narrow", policies=["secret/data/other/"])

    with pytest.raises(hvac.exceptions.Forbidden) as no_token:
        raw_get(client(vault, token=None), "/v1/secret/data/apps/web")
    assert no_token.value.errors == ["permission denied"]
    with pytest.raises(hvac.exceptions.Forbidden) as unknown_token:
        raw_get(client(vault, token="who"), "/v1/secret/data/apps/web")
    assert unknown_token.value.errors == ["permission denied"]
    with pytest.raises(hvac.exceptions.Forbidden, match="permission denied"):
        raw_get(client(vault, token="narrow"), "/v1/secret/data/apps/web")

    with pytest.raises(hvac.exceptions.InvalidPath):
        raw_get(client(vault), "/v1/nothing/here")
    with pytest.raises(hvac.exceptions.UnexpectedError):  # 405
        client(vault).adapter.put("/v1/auth/token/lookup-self")

    response = client(vault).adapter.get("/v1/secret/data/missing", raise_exception=False)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"errors": []}


def test_sealed_and_rate_limited(vault: VaultStandIn) -> None:
    vault.put_v2("apps/web", {"pw": "x"})
    c = client(vault)
    vault.sealed = True
    with pytest.raises(hvac.exceptions.VaultDown) as sealed:
        raw_get(c, "/v1/secret/data/apps/web")
    assert sealed.value.errors == ["Vault is sealed"]
    with pytest.raises(hvac.exceptions.VaultDown):
        client(vault, token=None).auth.kubernetes.login("any", "jwt")
    assert c.sys.is_sealed() is True  # type: ignore[no-untyped-call]  # sys/seal-status answers
    vault.sealed = False
    assert c.sys.is_sealed() is False  # type: ignore[no-untyped-call]

    vault.rate_limited = True
    with pytest.raises(hvac.exceptions.RateLimitExceeded) as limited:
        raw_get(c, "/v1/secret/data/apps/web")
    assert limited.value.errors == [
        'request path "secret/data/apps/web": rate limit quota exceeded'
    ]
    vault.rate_limited = False
    assert raw_get(c, "/v1/secret/data/apps/web")["data"]["data"] == {"pw": "x"}


def test_delay_beyond_client_timeout(vault: VaultStandIn) -> None:
    vault.put_v2("apps/web", {"pw": "x"})
    vault.delay = 1.0
    with pytest.raises(requests.exceptions.Timeout):
        raw_get(client(vault, timeout=0.2), "/v1/secret/data/apps/web")
    vault.delay = 0.0
    assert raw_get(client(vault, timeout=0.5), "/v1/secret/data/apps/web")["data"]["data"]


def test_stop_refuses_and_start_restarts_on_the_same_port(vault: VaultStandIn) -> None:
    vault.put_v2("apps/web", {"pw": "kept"})
    url = vault.url
    vault.stop()
    assert not vault.running
    with pytest.raises(requests.exceptions.ConnectionError):
        raw_get(client(vault), "/v1/secret/data/apps/web")
    vault.start()
    assert vault.url == url
    assert raw_get(client(vault), "/v1/secret/data/apps/web")["data"]["data"] == {"pw": "kept"}


def test_request_log_and_counts(vault: VaultStandIn) -> None:
    vault.put_v2("apps/web", {"pw": "x"})
    c = client(vault)
    raw_get(c, "/v1/secret/data/apps/web", version=1)
    c.auth.token.lookup_self()
    assert vault.requests == [
        ("GET", "/v1/secret/data/apps/web", ""),
        ("GET", "/v1/auth/token/lookup-self", ""),
    ]
    assert vault.count("/v1/secret/") == 1
    assert vault.count("auth/token/") == 1
    vault.reset_counts()
    assert vault.count() == 0
