"""The rotation watcher: versions per store, one request per secret, one patch per change.

Vault is the stand-in that follows Vault's documented API (tests/support/vault.py, no Vault
binary can be installed here) and AWS is moto in server mode, both read by the real
stores. The watcher's Kubernetes side is recorded here at its two seams (the patcher and
the Lease elector); test_rotation_end_to_end.py runs it against the API stand-in.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from backends import CredentialResolver, ResolverSettings
from backends.aws import AwsSecretsManagerStore, AwsSettings
from backends.vault import VaultSettings, VaultStore
from compiler.model import AwsSecretRef, PolicyRef, VaultRef
from compiler.pipeline import load_policies
from server.kube import LeaseElector, PolicyPatcher
from server.rotation import RotationWatcher
from tests.builders import policy
from tests.support.aws import MotoServer
from tests.support.kube import KubeStandIn
from tests.support.secrets import remember
from tests.support.vault import VaultStandIn

TOKEN = "hvs.rotation-token"


@pytest.fixture
def vault() -> Iterator[VaultStandIn]:
    remember(TOKEN)
    with VaultStandIn() as standin:
        standin.add_token(TOKEN)
        yield standin


@pytest.fixture
def vault_store(vault: VaultStandIn, monkeypatch: pytest.MonkeyPatch) -> VaultStore:
    monkeypatch.setenv("VAULT_TOKEN", TOKEN)
    return VaultStore(VaultSettings(addr=vault.url))


class Recorder:
    """The Kubernetes seams: which revisions the watcher would write, and who leads."""

    def __init__(self, leader: bool = True) -> None:
        self.leader = leader
        self.revisions: dict[PolicyRef, str] = {}
        self.patches: list[PolicyRef] = []

    def lead(self) -> bool:
        return self.leader

    def ensure_revision(self, policy: PolicyRef, revision: str) -> bool:
        if self.revisions.get(policy) == revision:
            return False
        self.revisions[policy] = revision
        self.patches.append(policy)
        return True


def vaulted(name: str, secret: str, namespace: str = "default") -> bytes:
    source = {"vault": {"path": f"secret/data/gateways/{namespace}/{secret}", "key": "password"}}
    return policy(name, name, None, namespace, passwordFrom=source)


def watcher_for(
    store: VaultStore, recorder: Recorder
) -> tuple[CredentialResolver, RotationWatcher]:
    resolver = CredentialResolver(ResolverSettings(cache_ttl=3600), {"vault": store})
    return resolver, RotationWatcher(resolver, recorder, recorder, interval=30)


# --- Versions, store by store ------------------------------------------------------------


def test_vault_kv2_version_is_read_from_the_metadata_without_reading_the_secret(
    vault: VaultStandIn, vault_store: VaultStore
) -> None:
    vault.put_v2("gateways/default/eg", {"password": "first-kv2-pw"})
    ref = VaultRef("secret/data/gateways/default/eg", key="password")
    assert vault_store.version(ref) == "1"
    vault.put_v2("gateways/default/eg", {"password": "second-kv2-pw"})
    vault.reset_counts()
    assert vault_store.version(ref) == "2"
    assert vault.count("/v1/secret/metadata/") == 1 and vault.count("/v1/secret/data/") == 0
    assert vault_store.fetch(ref).version == "2"
    assert vault_store.version(VaultRef(ref.path, key="password", version=1)) == "1"  # pinned


def test_vault_kv1_version_is_a_digest_of_the_content(
    vault: VaultStandIn, vault_store: VaultStore
) -> None:
    ref = VaultRef("kv/gateways/default/eg", engine="kv-v1", key="password")
    vault.put_v1("gateways/default/eg", {"password": "first-kv1-pw"})
    first = vault_store.version(ref)
    assert first.startswith("sha256:") and "first-kv1-pw" not in first
    vault.put_v1("gateways/default/eg", {"password": "first-kv1-pw"})
    assert vault_store.version(ref) == first  # rewritten, same content: no new version
    vault.put_v1("gateways/default/eg", {"password": "second-kv1-pw"})
    assert vault_store.version(ref) != first


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[MotoServer]:
    for name in [*os.environ]:
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    with MotoServer() as server:
        yield server


def test_aws_version_is_the_version_id_holding_the_stage(aws: MotoServer) -> None:
    remember("first-aws-pw", "second-aws-pw")
    store = AwsSecretsManagerStore(AwsSettings(region="us-east-1", endpoint_url=aws.endpoint_url))
    client = aws.client("secretsmanager")
    client.create_secret(Name="gateways/default/eg", SecretString="first-aws-pw")
    current = AwsSecretRef("gateways/default/eg")
    previous = AwsSecretRef("gateways/default/eg", version_stage="AWSPREVIOUS")
    first = store.version(current)
    assert first == store.fetch(current).version
    client.put_secret_value(SecretId="gateways/default/eg", SecretString="second-aws-pw")
    assert store.version(current) not in ("", first)
    assert store.version(previous) == first  # the stage the reference reads
    assert aws.count("secretsmanager", "DescribeSecret") == 3


# --- The watcher --------------------------------------------------------------------------


def test_ten_policies_on_three_secrets_cost_three_requests_a_poll_and_no_patch_without_change(
    vault: VaultStandIn, vault_store: VaultStore
) -> None:
    for secret in ("a", "b", "c"):
        vault.put_v2(f"gateways/default/{secret}", {"password": f"pw-{secret}-1234"})
    recorder = Recorder()
    resolver, watcher = watcher_for(vault_store, recorder)
    load_policies([vaulted(f"p{i}", "abc"[i % 3]) for i in range(10)], resolver)
    vault.reset_counts()
    report = watcher.poll_once()
    print(
        f"\n10 policies sharing 3 secrets: {report.requests} store requests per poll "
        f"({vault.count('/v1/secret/metadata/')} metadata reads at Vault)"
    )
    assert report.requests == 3 and vault.count("/v1/secret/metadata/") == 3
    assert vault.count("/v1/secret/data/") == 0
    assert report.changed == [] and recorder.patches == []
    assert watcher.poll_once().changed == [] and recorder.patches == []


def test_a_rotation_refreshes_the_cache_and_patches_only_the_policies_that_use_it(
    vault: VaultStandIn, vault_store: VaultStore
) -> None:
    vault.put_v2("gateways/default/a", {"password": "pw-a-before"})
    vault.put_v2("gateways/default/b", {"password": "pw-b-before"})
    recorder = Recorder()
    resolver, watcher = watcher_for(vault_store, recorder)
    load_policies([vaulted("one", "a"), vaulted("two", "a"), vaulted("other", "b")], resolver)
    watcher.poll_once()

    vault.put_v2("gateways/default/a", {"password": "pw-a-after"})
    vault.reset_counts()
    report = watcher.poll_once()
    assert len(report.changed) == 1
    assert vault.count("/v1/secret/data/gateways/default/a") == 1  # the cache was refreshed
    assert sorted(p.name for p in recorder.patches) == ["one", "two"]
    assert (
        recorder.revisions[PolicyRef("default", "one")]
        == recorder.revisions[PolicyRef("default", "two")]
    )

    vault.reset_counts()
    load_policies([vaulted("one", "a")], resolver)
    assert vault.count("/v1/secret/data/") == 0  # the hook call finds the new value cached
    assert watcher.poll_once().changed == [] and len(recorder.patches) == 2  # nothing twice


def test_a_secret_that_flips_several_times_within_one_interval_is_one_change(
    vault: VaultStandIn, vault_store: VaultStore
) -> None:
    vault.put_v2("gateways/default/a", {"password": "pw-flip-0"})
    recorder = Recorder()
    resolver, watcher = watcher_for(vault_store, recorder)
    load_policies([vaulted("one", "a")], resolver)
    watcher.poll_once()
    for n in range(1, 4):
        vault.put_v2("gateways/default/a", {"password": f"pw-flip-{n}"})
    report = watcher.poll_once()
    assert len(report.changed) == 1 and recorder.patches == [PolicyRef("default", "one")]


def test_a_rotation_before_the_first_poll_is_still_seen(
    vault: VaultStandIn, vault_store: VaultStore
) -> None:
    vault.put_v2("gateways/default/a", {"password": "pw-early-1"})
    recorder = Recorder()
    resolver, watcher = watcher_for(vault_store, recorder)
    load_policies([vaulted("one", "a")], resolver)  # cached at version 1
    vault.put_v2("gateways/default/a", {"password": "pw-early-2"})
    assert len(watcher.poll_once().changed) == 1
    assert recorder.patches == [PolicyRef("default", "one")]


def test_a_replica_that_does_not_lead_refreshes_its_cache_but_patches_nothing(
    vault: VaultStandIn, vault_store: VaultStore
) -> None:
    vault.put_v2("gateways/default/a", {"password": "pw-follower-1"})
    recorder = Recorder(leader=False)
    resolver, watcher = watcher_for(vault_store, recorder)
    load_policies([vaulted("one", "a")], resolver)
    watcher.poll_once()
    vault.put_v2("gateways/default/a", {"password": "pw-follower-2"})
    report = watcher.poll_once()
    assert len(report.changed) == 1 and not report.leader and recorder.patches == []
    assert (
        resolver.cached_version(VaultRef("secret/data/gateways/default/a", key="password")) == "2"
    )


def test_a_new_revision_in_a_hook_call_makes_this_replica_fetch_again(
    vault: VaultStandIn, vault_store: VaultStore
) -> None:
    """Another replica saw the rotation and patched the policy; this one learns it from the call."""
    vault.put_v2("gateways/default/a", {"password": "pw-replica-1"})
    resolver = CredentialResolver(ResolverSettings(cache_ttl=3600), {"vault": vault_store})
    source = {"vault": {"path": "secret/data/gateways/default/a", "key": "password"}}

    def call(revision: str | None) -> None:
        spec: dict[str, Any] = {"passwordFrom": source}
        if revision:
            spec["credentialsRevision"] = revision
        load_policies([policy("one", "one", None, **spec)], resolver)

    call(None)
    vault.put_v2("gateways/default/a", {"password": "pw-replica-2"})
    vault.reset_counts()
    call(None)
    assert vault.count("/v1/secret/data/") == 0  # no revision yet: the cache serves
    call("r1")
    assert vault.count("/v1/secret/data/") == 1  # the first revision: fetched again
    call("r1")
    assert vault.count("/v1/secret/data/") == 1  # the same revision: the cache serves
    call("r2")
    assert vault.count("/v1/secret/data/") == 2  # a newer one: fetched again


def test_a_change_seen_while_another_replica_led_is_patched_once_this_one_leads(
    vault: VaultStandIn, vault_store: VaultStore
) -> None:
    vault.put_v2("gateways/default/a", {"password": "pw-pending-1"})
    recorder = Recorder(leader=False)
    resolver, watcher = watcher_for(vault_store, recorder)
    load_policies([vaulted("one", "a")], resolver)
    watcher.poll_once()
    vault.put_v2("gateways/default/a", {"password": "pw-pending-2"})
    watcher.poll_once()
    assert recorder.patches == []
    recorder.leader = True  # the old leader is gone
    report = watcher.poll_once()
    assert report.changed == [] and recorder.patches == [PolicyRef("default", "one")]
    watcher.poll_once()
    assert recorder.patches == [PolicyRef("default", "one")]


# --- Kubernetes: the Lease and the patch, against the API stand-in -------------------------
# The API server is a stand-in (tests/support/kube.py): none can be installed here.


def test_of_two_replicas_only_one_leads_until_its_lease_runs_out() -> None:
    with KubeStandIn() as kube:
        first = LeaseElector(kube.client(), "envoy-gateway-system", "rotation", "replica-a", 1)
        second = LeaseElector(kube.client(), "envoy-gateway-system", "rotation", "replica-b", 1)
        assert first.lead() and not second.lead()
        assert first.lead() and not second.lead()  # renewing keeps it
        time.sleep(1.2)  # replica-a stops renewing (it died): its lease runs out
        assert second.lead() and not first.lead()
        lease = kube.get("Lease", "envoy-gateway-system", "rotation")
        assert lease is not None and lease["spec"]["holderIdentity"] == "replica-b"
        assert lease["spec"]["leaseTransitions"] == 1


def test_a_policy_that_already_holds_the_revision_is_not_patched() -> None:
    with KubeStandIn() as kube:
        stored = json.loads(vaulted("one", "a"))
        kube.put_policy(stored)
        patcher = PolicyPatcher(kube.client())
        one = PolicyRef("default", "one")
        assert patcher.ensure_revision(one, "abc123")
        assert not patcher.ensure_revision(one, "abc123")
        assert not patcher.ensure_revision(PolicyRef("default", "deleted"), "abc123")
        patched = kube.get("ListenerContextExample", "default", "one")
        assert patched is not None and patched["metadata"]["generation"] == 2
        assert patched["spec"] == {**stored["spec"], "credentialsRevision": "abc123"}
        assert len(kube.patches) == 1
