"""The rotation watcher: versions per store, one request per secret, one patch per change.

Vault is the stand-in that follows Vault's documented API (tests/support/vault.py, no Vault
binary can be installed here) and AWS is moto in server mode, both read by the real
stores. The watcher's Kubernetes side is recorded here at its two seams (the patcher and
the Lease elector); test_rotation_end_to_end.py runs it against the API stand-in.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import hvac
import pytest
from lightkube import ApiError

from backends import CredentialResolver, ResolverSettings, stores
from backends.aws import AwsSecretsManagerStore, AwsSettings
from backends.registry import Templates, WatchedPolicy, watched_policy
from backends.stores import StoreError
from backends.tenancy import DEFAULT_AWS_TEMPLATE, DEFAULT_VAULT_TEMPLATE
from backends.vault import VaultSettings, VaultStore
from compiler.model import AwsSecretRef, PolicyRef, VaultRef
from compiler.pipeline import load_policies
from compiler.users import Resolved
from server.kube import LeaseElector, PolicyClient
from server.rotation import RotationWatcher
from tests.support.aws import MotoServer
from tests.support.builders import policy
from tests.support.kube import KubeStandIn, KubeStandInError
from tests.support.logged import events
from tests.support.secrets import remember
from tests.support.vault import ROOT_TOKEN, VaultStandIn


@pytest.fixture
def vault_store(vault: VaultStandIn, monkeypatch: pytest.MonkeyPatch) -> VaultStore:
    monkeypatch.setenv("VAULT_TOKEN", ROOT_TOKEN)
    return VaultStore(VaultSettings(addr=vault.url))


class Recorder:
    """The Kubernetes seams: the policies the API server holds, the revisions the watcher
    writes into them, and who leads."""

    def __init__(self, leader: bool = True) -> None:
        self.leader = leader
        self.leads = 0
        self.objects: dict[PolicyRef, dict[str, Any]] = {}
        self.revisions: dict[PolicyRef, str] = {}
        self.patches: list[PolicyRef] = []
        self._versions = itertools.count(1)

    def hold(self, *raws: bytes) -> None:
        """The API server holds these policies now (created or replaced)."""
        for raw in raws:
            obj = json.loads(raw)
            meta = obj["metadata"]
            meta.setdefault("namespace", "default")
            meta["resourceVersion"] = str(next(self._versions))
            self.objects[PolicyRef(meta["namespace"], meta["name"])] = obj

    def listed(self) -> list[dict[str, Any]]:
        return [json.loads(json.dumps(obj)) for obj in self.objects.values()]

    def lead(self) -> bool:
        self.leads += 1
        return self.leader

    def release(self, timeout: float) -> None:
        self.leader = False

    def ensure_revision(self, policy: WatchedPolicy, revision: str) -> bool:
        if policy.revision == revision:
            return False
        held = self.objects.get(policy.ref)
        if held is None or held["metadata"]["resourceVersion"] != policy.resource_version:
            raise KubeStandInError({"code": 409, "reason": "Conflict", "message": "changed"})
        held["spec"]["credentialsRevision"] = revision
        held["metadata"]["resourceVersion"] = str(next(self._versions))
        self.revisions[policy.ref] = revision
        self.patches.append(policy.ref)
        return True


def served(resolver: CredentialResolver, recorder: Recorder, *raws: bytes) -> list[Resolved]:
    """These policies exist in the API server, and Envoy Gateway's call brings them."""
    recorder.hold(*raws)
    return load_policies(list(raws), resolver).resolved


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


def test_vault_kv1_version_is_a_keyed_digest_of_the_content(
    vault: VaultStandIn, vault_store: VaultStore
) -> None:
    ref = VaultRef("kv/gateways/default/eg", engine="kv-v1", key="password")
    vault.put_v1("gateways/default/eg", {"password": "first-kv1-pw"})
    first = vault_store.version(ref)
    assert first.startswith("hmac-sha256:") and "first-kv1-pw" not in first
    plain = hashlib.sha256(b'{"password":"first-kv1-pw"}').hexdigest()
    assert plain[:32] not in first  # not a plain hash of the value: no offline oracle
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
        server.reset()  # moto keeps its secrets per process, not per server
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
    served(resolver, recorder, *[vaulted(f"p{i}", "abc"[i % 3]) for i in range(10)])
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
    served(resolver, recorder, vaulted("one", "a"), vaulted("two", "a"), vaulted("other", "b"))
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
    served(resolver, recorder, vaulted("one", "a"))
    assert vault.count("/v1/secret/data/") == 0  # the hook call finds the new value cached
    assert watcher.poll_once().changed == [] and len(recorder.patches) == 2  # nothing twice


def test_a_secret_that_flips_several_times_within_one_interval_is_one_change(
    vault: VaultStandIn, vault_store: VaultStore
) -> None:
    vault.put_v2("gateways/default/a", {"password": "pw-flip-0"})
    recorder = Recorder()
    resolver, watcher = watcher_for(vault_store, recorder)
    served(resolver, recorder, vaulted("one", "a"))
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
    served(resolver, recorder, vaulted("one", "a"))  # cached at version 1
    vault.put_v2("gateways/default/a", {"password": "pw-early-2"})
    assert len(watcher.poll_once().changed) == 1
    assert recorder.patches == [PolicyRef("default", "one")]


def test_a_replica_that_does_not_lead_refreshes_its_cache_but_patches_nothing(
    vault: VaultStandIn, vault_store: VaultStore
) -> None:
    vault.put_v2("gateways/default/a", {"password": "pw-follower-1"})
    recorder = Recorder(leader=False)
    resolver, watcher = watcher_for(vault_store, recorder)
    served(resolver, recorder, vaulted("one", "a"))
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
    served(resolver, recorder, vaulted("one", "a"))
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


def listed_policies(kube: KubeStandIn) -> dict[str, WatchedPolicy]:
    """The policies the watcher would watch, by name, as the API server lists them now."""
    client = PolicyClient(kube.client())
    templates = Templates(DEFAULT_VAULT_TEMPLATE, DEFAULT_AWS_TEMPLATE)
    watched = (watched_policy(obj, {"vault", "aws"}, templates) for obj in client.listed())
    return {policy.ref.name: policy for policy in watched if policy is not None}


def test_a_dead_holder_whose_clock_ran_ahead_is_replaced_after_one_duration() -> None:
    """Its last renewTime lies a day in the future: the Lease is judged by when this
    replica saw it change, on its own clock, not by that time."""
    ahead = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with KubeStandIn() as kube:
        kube.put(
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": "rotation", "namespace": "envoy-gateway-system"},
                "spec": {
                    "holderIdentity": "replica-dead",
                    "leaseDurationSeconds": 1,
                    "acquireTime": ahead,
                    "renewTime": ahead,
                    "leaseTransitions": 0,
                },
            }
        )
        elector = LeaseElector(kube.client(), "envoy-gateway-system", "rotation", "replica-b", 1)
        assert not elector.lead()  # held, as far as this replica has seen
        time.sleep(1.2)  # one duration without a change
        assert elector.lead()
        lease = kube.get("Lease", "envoy-gateway-system", "rotation")
        assert lease is not None and lease["spec"]["holderIdentity"] == "replica-b"


def test_a_policy_that_already_holds_the_revision_is_not_patched() -> None:
    with KubeStandIn() as kube:
        stored = json.loads(vaulted("one", "a"))
        kube.put_policy(stored)
        kube.put_policy(json.loads(vaulted("deleted", "a")))
        patcher = PolicyClient(kube.client())
        listed = listed_policies(kube)
        kube.delete("ListenerContextExample", "default", "deleted")
        assert patcher.ensure_revision(listed["one"], "abc123")
        assert not patcher.ensure_revision(listed_policies(kube)["one"], "abc123")
        assert not patcher.ensure_revision(listed["deleted"], "abc123")  # gone since listed
        patched = kube.get("ListenerContextExample", "default", "one")
        assert patched is not None and patched["metadata"]["generation"] == 2
        assert patched["spec"] == {**stored["spec"], "credentialsRevision": "abc123"}
        assert len(kube.patches) == 2


def test_a_policy_changed_since_it_was_listed_is_not_patched() -> None:
    """The patch is made against the resourceVersion listed: a policy edited (or deleted
    and created again) meanwhile is refused, and the next poll lists it anew."""
    with KubeStandIn() as kube:
        kube.put_policy(json.loads(vaulted("one", "a")))
        listed = listed_policies(kube)["one"]
        kube.put_policy(json.loads(vaulted("one", "b")))  # now reads another secret
        with pytest.raises(ApiError) as refused:
            PolicyClient(kube.client()).ensure_revision(listed, "abc123")
        assert refused.value.status.code == 409
        current = kube.get("ListenerContextExample", "default", "one")
        assert current is not None and "credentialsRevision" not in current["spec"]


# --- Review fixes: each policy on its own, absent secrets, the Lease, the pool, AWS, KV v1 -


def vault_ref(secret: str) -> VaultRef:
    return VaultRef(f"secret/data/gateways/default/{secret}", key="password")


def denied(resolver: CredentialResolver, raw: bytes) -> bool:
    """Whether a hook call for `raw` now denies its users (the credentials did not resolve)."""
    (resolved,) = load_policies([raw], resolver).resolved
    return resolved.error is not None


def test_a_refused_patch_leaves_that_policy_pending_and_the_others_are_patched(
    vault: VaultStandIn, vault_store: VaultStore, caplog: pytest.LogCaptureFixture
) -> None:
    """An admission webhook refuses one policy's patch (422): the ones after it still get theirs."""
    refusing = True

    def webhook(obj: dict[str, Any]) -> list[str]:
        revised = "credentialsRevision" in (obj.get("spec") or {})
        if refusing and revised and obj["metadata"]["name"] == "a":
            return ["spec.credentialsRevision: refused by the webhook"]
        return []

    vault.put_v2("gateways/default/s", {"password": "pw-refused-1"})
    with KubeStandIn(validator=webhook) as kube:
        for name in "abc":
            kube.put_policy(json.loads(vaulted(name, "s")))
        resolver = CredentialResolver(ResolverSettings(cache_ttl=3600), {"vault": vault_store})
        watcher = RotationWatcher(resolver, PolicyClient(kube.client()), Recorder(), 30)
        load_policies([vaulted(name, "s") for name in "abc"], resolver)
        watcher.poll_once()
        vault.put_v2("gateways/default/s", {"password": "pw-refused-2"})
        report = watcher.poll_once()
        assert [p.name for p in report.patched] == ["b", "c"]
        assert report.failed == [PolicyRef("default", "a")]
        (line,) = events(caplog, "rotation.patch_failed")
        assert line["policies"] == 1 and line["some_policies"] == "default/a"
        assert line["status"] == 422
        assert "webhook" not in str(line)  # the status, not the message (it may quote a spec)

        refusing = False
        report = watcher.poll_once()  # still pending: tried again
        assert report.patched == [PolicyRef("default", "a")] and report.failed == []
        assert watcher.poll_once().patched == []


def test_a_secret_created_after_its_policy_is_patched_in_when_it_appears(
    vault: VaultStandIn, vault_store: VaultStore
) -> None:
    recorder = Recorder()
    resolver, watcher = watcher_for(vault_store, recorder)
    recorder.hold(vaulted("early", "later"))
    assert denied(resolver, vaulted("early", "later"))  # NOT_FOUND: denied, and watched
    report = watcher.poll_once()
    assert report.requests == 1 and report.changed == [] and recorder.patches == []

    vault.put_v2("gateways/default/later", {"password": "pw-appeared"})
    report = watcher.poll_once()
    assert report.changed == [vault_ref("later").document]
    assert recorder.patches == [PolicyRef("default", "early")]
    assert not denied(resolver, vaulted("early", "later"))


def test_a_policy_resolved_while_the_store_was_down_is_patched_once_it_answers(
    vault: VaultStandIn, vault_store: VaultStore
) -> None:
    vault.put_v2("gateways/default/a", {"password": "pw-after-outage"})
    recorder = Recorder()
    resolver, watcher = watcher_for(vault_store, recorder)
    vault.sealed = True
    recorder.hold(vaulted("one", "a"))
    assert denied(resolver, vaulted("one", "a"))
    assert watcher.poll_once().changed == []  # still sealed: no change, nothing patched
    vault.sealed = False
    report = watcher.poll_once()
    assert len(report.changed) == 1 and recorder.patches == [PolicyRef("default", "one")]
    assert not denied(resolver, vaulted("one", "a"))
    assert watcher.poll_once().changed == []


def test_a_reference_outside_the_tenancy_guard_is_never_polled(
    vault: VaultStandIn, vault_store: VaultStore
) -> None:
    vault.put_v2("gateways/default/a", {"password": "pw-tenant-a"})
    vault.put_v2("gateways/other/a", {"password": "pw-tenant-other"})
    recorder = Recorder()
    resolver, watcher = watcher_for(vault_store, recorder)
    assert not served(resolver, recorder, vaulted("one", "a"))[0].error
    assert watcher.poll_once().requests == 1
    # The same policy now points into another namespace's path: refused, and not polled,
    # nor is what it read before.
    source = {"vault": {"path": "secret/data/gateways/other/a", "key": "password"}}
    assert served(resolver, recorder, policy("one", "one", None, passwordFrom=source))[0].error
    vault.reset_counts()
    assert watcher.poll_once().requests == 0 and vault.count("/v1/secret/") == 0


def test_a_soft_deleted_vault_secret_reaches_envoy_and_so_does_its_return(
    vault: VaultStandIn, vault_store: VaultStore
) -> None:
    vault.put_v2("gateways/default/a", {"password": "pw-deleted-1"})
    recorder = Recorder()
    resolver, watcher = watcher_for(vault_store, recorder)
    served(resolver, recorder, vaulted("one", "a"), vaulted("other", "a"))
    watcher.poll_once()
    client = hvac.Client(url=vault.url, token=ROOT_TOKEN)
    client.secrets.kv.v2.delete_latest_version_of_secret("gateways/default/a")  # DELETE data/

    report = watcher.poll_once()
    assert report.changed == [vault_ref("a").document]
    assert sorted(p.name for p in recorder.patches) == ["one", "other"]
    assert resolver.cached_version(vault_ref("a")) is None  # the last value is dropped
    assert denied(resolver, vaulted("one", "a"))  # the re-translation denies
    assert watcher.poll_once().changed == []  # still absent: no second change

    vault.put_v2("gateways/default/a", {"password": "pw-deleted-2"})
    assert watcher.poll_once().changed == [vault_ref("a").document]
    assert len(recorder.patches) == 4 and not denied(resolver, vaulted("one", "a"))


@pytest.mark.parametrize("how", ["delete", "destroy", "metadata"])
def test_a_vault_secret_deleted_destroyed_or_removed_is_absent(
    vault: VaultStandIn, vault_store: VaultStore, how: str
) -> None:
    vault.put_v2("gateways/default/a", {"password": "pw-gone-1"})
    number = vault.put_v2("gateways/default/a", {"password": "pw-gone-2"})
    recorder = Recorder()
    resolver, watcher = watcher_for(vault_store, recorder)
    served(resolver, recorder, vaulted("one", "a"))
    watcher.poll_once()
    kv = hvac.Client(url=vault.url, token=ROOT_TOKEN).secrets.kv.v2
    if how == "delete":
        kv.delete_secret_versions("gateways/default/a", versions=[number])  # POST delete/
    elif how == "destroy":
        kv.destroy_secret_versions("gateways/default/a", versions=[number])  # POST destroy/
    else:
        kv.delete_metadata_and_all_versions("gateways/default/a")  # metadata: 404
    with pytest.raises(StoreError) as gone:
        vault_store.version(vault_ref("a"))
    assert gone.value.outcome == "not_found"
    assert len(watcher.poll_once().changed) == 1
    assert recorder.patches == [PolicyRef("default", "one")]
    assert denied(resolver, vaulted("one", "a"))


def test_a_deleted_kv1_secret_is_absent(vault: VaultStandIn, vault_store: VaultStore) -> None:
    vault.put_v1("gateways/default/a", {"password": "pw-kv1-gone"})
    recorder = Recorder()
    source = {"vault": {"path": "kv/gateways/default/a", "engine": "kv-v1", "key": "password"}}
    raw = policy("one", "one", None, passwordFrom=source)
    settings = ResolverSettings(cache_ttl=3600, vault_path_template="kv/gateways/{namespace}/")
    resolver = CredentialResolver(settings, {"vault": vault_store})
    watcher = RotationWatcher(resolver, recorder, recorder, interval=30)
    assert not served(resolver, recorder, raw)[0].error
    watcher.poll_once()
    hvac.Client(url=vault.url, token=ROOT_TOKEN).secrets.kv.v1.delete_secret(
        "gateways/default/a", mount_point="kv"
    )
    assert len(watcher.poll_once().changed) == 1
    assert recorder.patches == [PolicyRef("default", "one")] and denied(resolver, raw)


@pytest.mark.parametrize("fault", ["sealed", "rate_limited", "stopped"])
def test_a_failing_store_is_no_change(
    vault: VaultStandIn, vault_store: VaultStore, fault: str
) -> None:
    vault.put_v2("gateways/default/a", {"password": "pw-outage"})
    recorder = Recorder()
    resolver, watcher = watcher_for(vault_store, recorder)
    served(resolver, recorder, vaulted("one", "a"))
    watcher.poll_once()
    if fault == "stopped":
        vault.stop()
    else:
        setattr(vault, fault, True)
    assert watcher.poll_once().changed == [] and recorder.patches == []
    if fault == "stopped":
        vault.start()
    else:
        setattr(vault, fault, False)
    assert watcher.poll_once().changed == [] and recorder.patches == []
    assert not denied(resolver, vaulted("one", "a"))


def test_failed_version_checks_are_one_line_per_store_and_outcome_counting_and_naming_a_few(
    vault: VaultStandIn, vault_store: VaultStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Fifty policies on twenty secrets, Vault sealed: one line a poll, not fifty or twenty."""
    recorder = Recorder()
    resolver, watcher = watcher_for(vault_store, recorder)
    raws = [vaulted(f"p{n:02}", f"s{n % 20:02}") for n in range(50)]
    for n in range(20):
        vault.put_v2(f"gateways/default/s{n:02}", {"password": f"pw-logged-{n}"})
    served(resolver, recorder, *raws)
    vault.sealed = True
    for _ in range(2):
        watcher.poll_once()
    lines = events(caplog, "rotation.version_failed")
    assert len(lines) == 2  # one per poll
    line = lines[0]
    assert line["store"] == "vault" and line["outcome"] == "unavailable"
    assert line["secrets"] == 20 and line["policies"] == 50
    # paths are logged, docs/security.md; a few of them, and the count of the others
    assert line["some_secrets"] == (
        "secret/data/gateways/default/s00,secret/data/gateways/default/s01,"
        "secret/data/gateways/default/s02,...(+17 more)"
    )
    assert line["some_policies"] == "default/p00,default/p01,default/p02,...(+47 more)"


def test_a_policy_switched_to_a_plain_password_is_no_longer_polled_or_patched(
    vault: VaultStandIn, vault_store: VaultStore
) -> None:
    vault.put_v2("gateways/default/a", {"password": "pw-switched-1"})
    recorder = Recorder(leader=False)
    resolver, watcher = watcher_for(vault_store, recorder)
    served(resolver, recorder, vaulted("one", "a"))
    watcher.poll_once()
    vault.put_v2("gateways/default/a", {"password": "pw-switched-2"})
    assert len(watcher.poll_once().changed) == 1  # pending: this replica does not lead
    served(resolver, recorder, policy("one", "one", "plain-switched-pw"))  # now plain text
    recorder.leader = True
    report = watcher.poll_once()
    assert report.requests == 0 and recorder.patches == []  # neither polled nor patched
    assert watcher._versions == {}  # what it knew of the secret is dropped too


def test_every_poll_takes_or_renews_the_lease_and_a_dead_leader_is_replaced() -> None:
    """Nothing changes at all: the leader still renews, so its death is seen in one duration."""
    resolver = CredentialResolver(ResolverSettings(), {})
    with KubeStandIn() as kube:
        electors = [
            LeaseElector(kube.client(), "envoy-gateway-system", "rotation", name, 1)
            for name in ("replica-a", "replica-b")
        ]
        a, b = (RotationWatcher(resolver, Recorder(), e, interval=30) for e in electors)
        assert a.poll_once().leader and not b.poll_once().leader
        lease = "/apis/coordination.k8s.io/v1/namespaces/envoy-gateway-system/leases/rotation"
        renewals = kube.count("PUT", lease)
        assert a.poll_once().leader and kube.count("PUT", lease) == renewals + 1  # renewed
        assert not b.poll_once().leader  # replica-b sees the renewal
        time.sleep(1.2)  # replica-a dies: no more polls, its Lease runs out
        assert b.poll_once().leader and not a.poll_once().leader


def test_a_stopped_watcher_releases_the_lease_so_another_replica_leads_at_once() -> None:
    resolver = CredentialResolver(ResolverSettings(), {})
    with KubeStandIn() as kube:
        a, b = (
            RotationWatcher(
                resolver,
                Recorder(),
                LeaseElector(kube.client(), "envoy-gateway-system", "rotation", name, 3600),
                interval=3600,
            )
            for name in ("replica-a", "replica-b")
        )
        a.start()
        assert a.poll_once().leader and not b.poll_once().leader
        a.stop()  # a clean shutdown
        lease = kube.get("Lease", "envoy-gateway-system", "rotation")
        assert lease is not None and not lease["spec"]["holderIdentity"]
        assert b.poll_once().leader  # at once, not an hour later
        lease = kube.get("Lease", "envoy-gateway-system", "rotation")
        assert lease is not None and lease["spec"]["holderIdentity"] == "replica-b"
        assert lease["spec"]["leaseDurationSeconds"] == 3600


def test_version_checks_run_side_by_side_at_most_eight_at_a_time(
    vault: VaultStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nine secrets, a store that hangs: eight checks wait together, the ninth waits its turn."""
    monkeypatch.setenv("VAULT_TOKEN", ROOT_TOKEN)
    store = VaultStore(VaultSettings(addr=vault.url, timeout=30))
    recorder = Recorder()
    resolver, watcher = watcher_for(store, recorder)
    secrets = [f"s{n}" for n in range(9)]
    for secret in secrets:
        vault.put_v2(f"gateways/default/{secret}", {"password": f"pw-{secret}-slow"})
    served(resolver, recorder, *[vaulted(f"p-{secret}", secret) for secret in secrets])
    vault.reset_counts()
    vault.delay = 30.0  # every answer waits (or until the stand-in stops)
    polling = threading.Thread(target=watcher.poll_once)
    polling.start()
    started = time.monotonic()
    while vault.count("/v1/secret/metadata/") < 8:  # a bound on the wait, not a measurement
        assert time.monotonic() - started < 10, "the checks were not sent together"
        time.sleep(0.02)
    time.sleep(0.3)
    assert vault.count("/v1/secret/metadata/") == 8  # the pool is bounded
    vault.stop()  # the eight fail at once, the ninth finds the store gone
    polling.join(timeout=30)
    assert not polling.is_alive()


@pytest.fixture
def aws_store(aws: MotoServer) -> AwsSecretsManagerStore:
    return AwsSecretsManagerStore(AwsSettings(region="us-east-1", endpoint_url=aws.endpoint_url))


def aws_policy(name: str, secret_id: str, **fields: str) -> bytes:
    source = {"awsSecretsManager": {"secretId": secret_id, **fields}}
    return policy(name, name, None, passwordFrom=source)


def test_references_to_one_aws_secret_cost_one_describe_secret_a_poll(
    aws: MotoServer, aws_store: AwsSecretsManagerStore
) -> None:
    """By name, by name with AWSCURRENT, by ARN, and AWSPREVIOUS: one secret, one request."""
    remember("aws-shared-1", "aws-shared-2")
    client = aws.client("secretsmanager")
    arn = client.create_secret(Name="gateways/default/eg", SecretString="aws-shared-1")["ARN"]
    recorder = Recorder()
    resolver = CredentialResolver(ResolverSettings(cache_ttl=3600), {"aws": aws_store})
    watcher = RotationWatcher(resolver, recorder, recorder, interval=30)
    raws = [
        aws_policy("by-name", "gateways/default/eg"),
        aws_policy("by-stage", "gateways/default/eg", versionStage="AWSCURRENT"),
        aws_policy("by-arn", arn),
        aws_policy("previous", "gateways/default/eg", versionStage="AWSPREVIOUS"),
    ]
    resolved = served(resolver, recorder, *raws)
    assert [r.error is None for r in resolved] == [True, True, True, False]  # no previous yet
    for _ in range(3):
        aws.clear_requests()
        report = watcher.poll_once()
        assert aws.count("secretsmanager", "DescribeSecret") == 1 and report.requests == 1
        assert report.changed == []

    client.put_secret_value(SecretId=arn, SecretString="aws-shared-2")
    aws.clear_requests()
    report = watcher.poll_once()
    assert aws.count("secretsmanager", "DescribeSecret") == 1
    assert len(report.changed) == 4  # each reference's own version: AWSPREVIOUS appeared
    assert sorted(p.name for p in recorder.patches) == [
        "by-arn", "by-name", "by-stage", "previous"
    ]  # fmt: skip


def test_an_aws_secret_deleted_or_without_its_stage_is_absent(
    aws: MotoServer, aws_store: AwsSecretsManagerStore
) -> None:
    remember("aws-gone-1", "aws-gone-2")
    client = aws.client("secretsmanager")
    client.create_secret(Name="gateways/default/staged", SecretString="aws-gone-1")
    second = client.put_secret_value(
        SecretId="gateways/default/staged", SecretString="aws-gone-2", VersionStages=["BLUE"]
    )["VersionId"]
    client.create_secret(Name="gateways/default/deleted", SecretString="aws-gone-1")
    client.create_secret(Name="gateways/default/forced", SecretString="aws-gone-1")
    recorder = Recorder()
    resolver = CredentialResolver(ResolverSettings(cache_ttl=3600), {"aws": aws_store})
    watcher = RotationWatcher(resolver, recorder, recorder, interval=30)
    raws = [
        aws_policy("staged", "gateways/default/staged", versionStage="BLUE"),
        aws_policy("deleted", "gateways/default/deleted"),
        aws_policy("forced", "gateways/default/forced"),
    ]
    assert all(r.error is None for r in served(resolver, recorder, *raws))
    watcher.poll_once()

    client.update_secret_version_stage(
        SecretId="gateways/default/staged", VersionStage="BLUE", RemoveFromVersionId=second
    )
    client.delete_secret(SecretId="gateways/default/deleted", RecoveryWindowInDays=7)
    client.delete_secret(SecretId="gateways/default/forced", ForceDeleteWithoutRecovery=True)
    report = watcher.poll_once()
    assert len(report.changed) == 3
    assert sorted(p.name for p in recorder.patches) == ["deleted", "forced", "staged"]
    assert all(r.error is not None for r in load_policies(raws, resolver).resolved)


# --- KV v1: a keyed digest ------------------------------------------------------------------


def test_kv1_digests_are_keyed_per_process() -> None:
    """Two processes tell different versions for one content: the key never leaves either."""
    code = "from backends.stores import content_digest; print(content_digest({'password': 'x'}))"
    runs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(runs) == 2 and all(run.startswith("hmac-sha256:") for run in runs)


@contextlib.contextmanager
def process_key(key: bytes) -> Iterator[None]:
    """Act as a replica whose process drew `key` for its KV v1 digests."""
    saved = stores._DIGEST_KEY
    stores._DIGEST_KEY = key
    try:
        yield
    finally:
        stores._DIGEST_KEY = saved


def kv1_policy(name: str) -> bytes:
    source = {"vault": {"path": "kv/gateways/default/a", "engine": "kv-v1", "key": "password"}}
    return policy(name, name, None, passwordFrom=source)


def kv1_replica(
    store: VaultStore, kube: KubeStandIn, identity: str
) -> tuple[CredentialResolver, RotationWatcher]:
    settings = ResolverSettings(cache_ttl=3600, vault_path_template="kv/gateways/{namespace}/")
    resolver = CredentialResolver(settings, {"vault": store})
    elector = LeaseElector(kube.client(), "envoy-gateway-system", "rotation", identity, 3600)
    return resolver, RotationWatcher(resolver, PolicyClient(kube.client()), elector, 30)


def test_a_kv1_revision_cannot_be_computed_from_the_value_alone(
    vault: VaultStandIn, vault_store: VaultStore
) -> None:
    vault.put_v1("gateways/default/a", {"password": "pw-kv1-oracle"})
    revisions = set()
    with KubeStandIn() as kube:
        kube.put_policy(json.loads(kv1_policy("one")))
        for key in (b"k" * 32, b"q" * 32):
            with process_key(key):
                resolver, watcher = kv1_replica(vault_store, kube, "replica")
                load_policies([kv1_policy("one")], resolver)
                watcher.poll_once()
                revisions.add(watcher.revision(PolicyRef("default", "one")))
    assert len(revisions) == 2  # the same value, other keys: other revisions


def test_kv1_on_a_leader_change_costs_at_most_one_extra_patch(
    vault: VaultStandIn, vault_store: VaultStore
) -> None:
    vault.put_v1("gateways/default/a", {"password": "pw-kv1-leader-1"})
    key_a, key_b = b"a" * 32, b"b" * 32
    one = PolicyRef("default", "one")
    with KubeStandIn() as kube:
        kube.put_policy(json.loads(kv1_policy("one")))
        with process_key(key_a):
            resolver_a, a = kv1_replica(vault_store, kube, "replica-a")
            load_policies([kv1_policy("one")], resolver_a)
            a.start()
            assert a.poll_once().leader
        with process_key(key_b):
            resolver_b, b = kv1_replica(vault_store, kube, "replica-b")
            load_policies([kv1_policy("one")], resolver_b)
            assert not b.poll_once().leader

        vault.put_v1("gateways/default/a", {"password": "pw-kv1-leader-2"})
        with process_key(key_a):
            assert a.poll_once().patched == [one]
        with process_key(key_b):
            assert b.poll_once().patched == []  # seen, pending: replica-a leads
        with process_key(key_a):
            a.stop()  # replica-a goes away
        with process_key(key_b):
            assert b.poll_once().patched == [one]  # its own digest: the one extra patch
            assert b.poll_once().patched == []
            assert b.poll_once().patched == []
        assert len([path for path, _ in kube.patches if path.endswith("/one")]) == 2


# --- What is watched: only configured stores, at most the limit, lines bounded -------------


def test_a_store_that_is_not_configured_is_not_polled(
    vault: VaultStandIn, vault_store: VaultStore, aws: MotoServer
) -> None:
    """AWS has no region here: its references are not watched, and AWS is never asked."""
    store = AwsSecretsManagerStore(AwsSettings(endpoint_url=aws.endpoint_url))
    recorder = Recorder()
    resolver = CredentialResolver(ResolverSettings(), {"vault": vault_store, "aws": store})
    watcher = RotationWatcher(resolver, recorder, recorder, 30, stores={"vault"})
    vault.put_v2("gateways/default/a", {"password": "pw-configured-only"})
    recorder.hold(vaulted("one", "a"), aws_policy("two", "gateways/default/eg"))
    aws.clear_requests()
    report = watcher.poll_once()
    assert report.watched == 1 and report.requests == 1
    assert aws.count("secretsmanager", "DescribeSecret") == 0


def test_at_most_the_limit_of_policies_is_watched_and_polled(
    vault: VaultStandIn, vault_store: VaultStore, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    resolver = CredentialResolver(ResolverSettings(cache_ttl=3600), {"vault": vault_store})
    watcher = RotationWatcher(resolver, recorder, recorder, 30, limit=3)
    recorder.hold(*[vaulted(f"p{n}", f"s{n}") for n in range(10)])
    vault.reset_counts()
    report = watcher.poll_once()
    assert (report.watched, report.unwatched, report.requests) == (3, 7, 3)
    assert vault.count("/v1/secret/metadata/") == 3
    watcher.poll_once()  # the same: no second line
    recorder.hold(vaulted("p10", "s10"))
    watcher.poll_once()  # one more left out: a line again
    lines = events(caplog, "rotation.limit_reached")
    assert [line["unwatched"] for line in lines] == [7, 8]
    assert lines[0]["some_unwatched"] == "default/p3,default/p4,default/p5,...(+4 more)"


def test_a_poll_that_patches_many_policies_logs_one_line(
    vault: VaultStandIn, vault_store: VaultStore, caplog: pytest.LogCaptureFixture
) -> None:
    vault.put_v2("gateways/default/s", {"password": "pw-many-1"})
    recorder = Recorder()
    resolver, watcher = watcher_for(vault_store, recorder)
    served(resolver, recorder, *[vaulted(f"p{n:02}", "s") for n in range(40)])
    watcher.poll_once()
    vault.put_v2("gateways/default/s", {"password": "pw-many-2"})
    assert len(watcher.poll_once().patched) == 40
    (line,) = events(caplog, "rotation.patched")
    assert line["policies"] == 40
    assert line["some_policies"] == "default/p00,default/p01,default/p02,...(+37 more)"


def test_a_stopped_watcher_ends_a_poll_that_waits_on_a_store_and_releases_in_time(
    vault: VaultStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll hangs on a store that does not answer; `stop` with a deadline returns by it,
    and the Lease is given up all the same."""
    monkeypatch.setenv("VAULT_TOKEN", ROOT_TOKEN)
    store = VaultStore(VaultSettings(addr=vault.url, timeout=30))
    recorder = Recorder()
    resolver, watcher = watcher_for(store, recorder)
    vault.put_v2("gateways/default/a", {"password": "pw-stop-hang"})
    served(resolver, recorder, vaulted("one", "a"))
    watcher.poll_once()  # leads from here on
    watcher.interval = 0.05
    vault.delay = 30.0  # every answer waits
    watcher.start()
    time.sleep(0.3)  # a poll is waiting on Vault now
    started = time.monotonic()
    watcher.stop(deadline=started + 1.0)
    assert time.monotonic() - started < 1.5
    assert recorder.leader is False  # released
    vault.delay = 0.0


def test_a_list_that_fails_halfway_keeps_the_last_one(
    vault: VaultStandIn, vault_store: VaultStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The API server fails on the second page: the poll works from the previous list."""
    vault.put_v2("gateways/default/a", {"password": "pw-list-fails"})
    recorder = Recorder()
    resolver, watcher = watcher_for(vault_store, recorder)
    served(resolver, recorder, vaulted("one", "a"), vaulted("two", "a"))
    assert watcher.poll_once().watched == 2

    first_page = recorder.listed()[:1]

    def first_page_then_503() -> Iterator[dict[str, Any]]:
        yield from first_page
        raise KubeStandInError({"code": 503, "reason": "ServiceUnavailable"})

    recorder.listed = first_page_then_503  # type: ignore[method-assign]
    report = watcher.poll_once()
    assert report.watched == 2 and report.requests == 1
    (line,) = events(caplog, "rotation.list_failed")
    assert line["error"] == "KubeStandInError"
