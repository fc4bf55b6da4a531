"""The Kubernetes API stand-in answers the real `lightkube` client the way the API server does.

Everything goes through lightkube (a generic resource for ListenerContextExample, the
built-in Lease), so URLs, content types, decoding and the ApiError raised for a Status are
checked against what lightkube actually sends and parses.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
from lightkube import ApiError, Client, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from lightkube.types import PatchType

from tests.support.kube import (
    MERGE_PATCH,
    KubeStandIn,
    KubeStandInError,
    merge_patch,
    parse_label_selector,
)

ListenerContextExample = create_namespaced_resource(
    "example.extensions.io", "v1alpha1", "ListenerContextExample", "listenercontextexamples"
)
NS = "apps"
POLICIES = "/apis/example.extensions.io/v1alpha1/namespaces/apps/listenercontextexamples"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/apps/leases"


@pytest.fixture
def client(kube: KubeStandIn) -> Iterator[Client]:
    with kube.client(namespace=NS) as c:
        yield c


def policy(name: str = "web", namespace: str = NS, **spec: Any) -> Any:
    return ListenerContextExample(
        metadata=ObjectMeta(name=name, namespace=namespace),
        spec={
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "eg"}],
            "username": "alice",
            "passwordFrom": {"store": "vault", "path": "apps/web"},
            **spec,
        },
    )


def md(obj: Any) -> ObjectMeta:
    assert obj.metadata is not None
    return obj.metadata  # type: ignore[no-any-return]


def rv(metadata: ObjectMeta) -> int:
    """resourceVersion is an opaque string to clients; the stand-in's are counters."""
    assert metadata.resourceVersion is not None
    return int(metadata.resourceVersion)


def api_error(excinfo: pytest.ExceptionInfo[ApiError]) -> tuple[int | None, str | None]:
    status = excinfo.value.status
    return status.code, status.reason


# -- ListenerContextExample --------------------------------------------------------


def test_create_sets_server_fields_and_get_and_list_return_it(
    kube: KubeStandIn, client: Client
) -> None:
    before = int(kube.resource_version)
    created = client.create(policy())
    meta = md(created)
    assert meta.name == "web" and meta.namespace == NS
    assert meta.uid and meta.creationTimestamp is not None
    assert meta.generation == 1
    assert rv(meta) > before
    assert created["apiVersion"] == "example.extensions.io/v1alpha1"
    assert created["kind"] == "ListenerContextExample"

    fetched = client.get(ListenerContextExample, "web", namespace=NS)
    assert md(fetched).uid == meta.uid
    assert fetched["spec"]["username"] == "alice"

    client.create(policy("other", "team-b"))
    in_apps = client.list(ListenerContextExample, namespace=NS)
    assert [md(p).name for p in in_apps] == ["web"]
    assert in_apps.resourceVersion == kube.resource_version
    everywhere = client.list(ListenerContextExample, namespace="*")
    assert sorted((md(p).namespace, md(p).name) for p in everywhere) == [
        (NS, "web"),
        ("team-b", "other"),
    ]
    assert kube.count("GET", "/apis/example.extensions.io/v1alpha1/listenercontextexamples") == 1


def test_generation_follows_spec_and_resource_version_every_change(client: Client) -> None:
    first = md(client.create(policy()))

    spec_patched = md(
        client.patch(
            ListenerContextExample,
            "web",
            {"spec": {"credentialsRevision": "r1"}},
            namespace=NS,
            patch_type=PatchType.MERGE,
        )
    )
    assert spec_patched.generation == 2
    assert rv(spec_patched) > rv(first)

    label_patched = md(
        client.patch(
            ListenerContextExample,
            "web",
            {"metadata": {"labels": {"team": "web"}, "annotations": {"note": "x"}}},
            namespace=NS,
            patch_type=PatchType.MERGE,
        )
    )
    assert label_patched.generation == 2
    assert label_patched.labels == {"team": "web"}
    assert rv(label_patched) > rv(spec_patched)

    # a patch that changes nothing is not written, as the API server does
    same = md(
        client.patch(
            ListenerContextExample,
            "web",
            {"spec": {"credentialsRevision": "r1"}},
            namespace=NS,
            patch_type=PatchType.MERGE,
        )
    )
    assert (same.generation, same.resourceVersion) == (2, label_patched.resourceVersion)
    assert same.uid == first.uid and same.creationTimestamp == first.creationTimestamp


def test_merge_patch_touches_nothing_else(kube: KubeStandIn, client: Client) -> None:
    client.create(policy(forwardUsernameHeader="X-User"))
    patch = {"spec": {"credentialsRevision": "r2", "forwardUsernameHeader": None}}
    patched = client.patch(
        ListenerContextExample,
        "web",
        patch,
        namespace=NS,
        patch_type=PatchType.MERGE,
        field_manager="extension-server",
    )
    spec = patched["spec"]
    assert spec["credentialsRevision"] == "r2"
    assert "forwardUsernameHeader" not in spec
    assert spec["username"] == "alice"
    assert spec["passwordFrom"] == {"store": "vault", "path": "apps/web"}
    assert spec["targetRefs"][0]["name"] == "eg"
    assert kube.get("ListenerContextExample", NS, "web") == dict(patched)

    assert kube.patches == [(f"{POLICIES}/web", patch)]
    patch_request = next(r for r in kube.requests if r.method == "PATCH")
    assert patch_request.content_type == MERGE_PATCH
    assert "fieldManager=extension-server" in patch_request.query


def test_patch_carrying_a_stale_resource_version_conflicts(client: Client) -> None:
    version = md(client.create(policy())).resourceVersion
    client.patch(
        ListenerContextExample,
        "web",
        {"metadata": {"resourceVersion": version}, "spec": {"username": "bob"}},
        namespace=NS,
        patch_type=PatchType.MERGE,
    )
    with pytest.raises(ApiError) as stale:
        client.patch(
            ListenerContextExample,
            "web",
            {"metadata": {"resourceVersion": version}, "spec": {"username": "carol"}},
            namespace=NS,
            patch_type=PatchType.MERGE,
        )
    assert api_error(stale) == (409, "Conflict")
    assert "the object has been modified" in str(stale.value)
    assert client.get(ListenerContextExample, "web", namespace=NS)["spec"]["username"] == "bob"


def test_replace_needs_the_current_resource_version(client: Client) -> None:
    current = client.create(policy())
    current["spec"]["username"] = "bob"
    replaced = client.replace(current)
    assert md(replaced).generation == 2
    assert replaced["spec"]["username"] == "bob"

    current["spec"]["username"] = "carol"  # still the first resourceVersion
    with pytest.raises(ApiError) as stale:
        client.replace(current)
    assert api_error(stale) == (409, "Conflict")

    unversioned = policy(username="dave")
    with pytest.raises(ApiError) as missing_version:
        client.replace(unversioned)
    assert api_error(missing_version) == (422, "Invalid")
    assert "must be specified for an update" in str(missing_version.value)


def test_missing_policy_is_404(client: Client) -> None:
    with pytest.raises(ApiError) as missing:
        client.get(ListenerContextExample, "nope", namespace=NS)
    assert api_error(missing) == (404, "NotFound")
    assert missing.value.response.status_code == 404
    status = missing.value.status
    assert status.kind == "Status" and status.status == "Failure"
    assert status.message == 'listenercontextexamples.example.extensions.io "nope" not found'
    assert status.details is not None and status.details.name == "nope"

    for call in (
        lambda: client.patch(
            ListenerContextExample, "nope", {"spec": {}}, namespace=NS, patch_type=PatchType.MERGE
        ),
        lambda: client.delete(ListenerContextExample, "nope", namespace=NS),
    ):
        with pytest.raises(ApiError) as also_missing:
            call()
        assert api_error(also_missing) == (404, "NotFound")


def test_create_of_an_existing_name_is_409_already_exists(client: Client) -> None:
    client.create(policy())
    with pytest.raises(ApiError) as exists:
        client.create(policy())
    assert api_error(exists) == (409, "AlreadyExists")


def test_other_patch_types_are_415_for_a_custom_resource(client: Client) -> None:
    client.create(policy())
    for patch_type, body in (
        (PatchType.STRATEGIC, {"spec": {"username": "bob"}}),
        (PatchType.JSON, [{"op": "replace", "path": "/spec/username", "value": "bob"}]),
    ):
        with pytest.raises(ApiError) as refused:
            client.patch(ListenerContextExample, "web", body, namespace=NS, patch_type=patch_type)
        assert api_error(refused) == (415, "UnsupportedMediaType")
    assert client.get(ListenerContextExample, "web", namespace=NS)["spec"]["username"] == "alice"


def test_delete_then_404_and_list_selectors_and_chunks(kube: KubeStandIn, client: Client) -> None:
    for name, team in (("a", "x"), ("b", "y"), ("c", "x")):
        client.create(ListenerContextExample(metadata=ObjectMeta(name=name, labels={"team": team})))
    assert [md(p).name for p in client.list(ListenerContextExample, labels={"team": "x"})] == [
        "a",
        "c",
    ]
    assert [md(p).name for p in client.list(ListenerContextExample, chunk_size=2)] == [
        "a",
        "b",
        "c",
    ]
    assert kube.count("GET", POLICIES) == 3  # one list, then two chunks

    version = kube.resource_version
    client.delete(ListenerContextExample, "b", namespace=NS)
    assert int(kube.resource_version) > int(version)
    with pytest.raises(ApiError) as gone:
        client.get(ListenerContextExample, "b", namespace=NS)
    assert api_error(gone) == (404, "NotFound")
    assert kube.get("ListenerContextExample", NS, "b") is None


def test_python_helpers_put_and_get_as_the_api_would(kube: KubeStandIn, client: Client) -> None:
    stored = kube.put_policy({"metadata": {"name": "web", "namespace": NS}, "spec": {"a": 1}})
    assert stored["metadata"]["generation"] == 1
    relabelled = kube.put_policy(
        {"metadata": {"name": "web", "namespace": NS, "labels": {"l": "1"}}, "spec": {"a": 1}}
    )
    assert relabelled["metadata"]["generation"] == 1
    assert relabelled["metadata"]["uid"] == stored["metadata"]["uid"]
    changed = kube.put_policy({"metadata": {"name": "web", "namespace": NS}, "spec": {"a": 2}})
    assert changed["metadata"]["generation"] == 2
    assert client.get(ListenerContextExample, "web", namespace=NS)["spec"] == {"a": 2}

    stale = {**changed, "spec": {"a": 3}}
    stale["metadata"] = {
        **changed["metadata"],
        "resourceVersion": stored["metadata"]["resourceVersion"],
    }
    with pytest.raises(KubeStandInError) as conflict:
        kube.put_policy(stale)
    assert conflict.value.status["code"] == 409
    assert kube.items("listenercontextexamples") == [kube.get("ListenerContextExample", NS, "web")]


def test_validator_answers_422() -> None:
    def require_username(obj: dict[str, Any]) -> list[str]:
        return [] if obj.get("spec", {}).get("username") else ["spec.username: Required value"]

    with KubeStandIn(validator=require_username) as strict, strict.client(namespace=NS) as c:
        with pytest.raises(ApiError) as invalid:
            c.create(ListenerContextExample(metadata=ObjectMeta(name="web"), spec={}))
        assert api_error(invalid) == (422, "Invalid")
        causes = invalid.value.status.details.causes  # type: ignore[union-attr]
        assert [(cause.field, cause.message) for cause in causes or []] == [
            ("spec.username", "Required value")
        ]
        assert md(c.create(policy())).generation == 1


# -- Lease ------------------------------------------------------------------------


def lease(holder: str) -> Lease:
    now = datetime.now(UTC)
    return Lease(
        metadata=ObjectMeta(name="extension-server", namespace=NS),
        spec=LeaseSpec(
            holderIdentity=holder, leaseDurationSeconds=15, acquireTime=now, renewTime=now
        ),
    )


def test_lease_create_get_replace(kube: KubeStandIn, client: Client) -> None:
    created = client.create(lease("a"))
    assert md(created).generation is None  # built-in Leases have none
    assert created.spec is not None and created.spec.holderIdentity == "a"
    with pytest.raises(ApiError) as exists:
        client.create(lease("b"))
    assert api_error(exists) == (409, "AlreadyExists")

    current = client.get(Lease, "extension-server", namespace=NS)
    assert current.spec is not None
    current.spec.holderIdentity = "b"
    replaced = client.replace(current)
    assert replaced.spec is not None and replaced.spec.holderIdentity == "b"
    assert rv(md(replaced)) > rv(md(created))
    assert md(replaced).uid == md(created).uid

    with pytest.raises(ApiError) as stale:
        client.replace(current)  # the resourceVersion it was read at
    assert api_error(stale) == (409, "Conflict")

    merged = client.patch(
        Lease,
        "extension-server",
        {"spec": {"holderIdentity": "c"}},
        namespace=NS,
        patch_type=PatchType.MERGE,
    )
    assert merged.spec is not None and merged.spec.leaseDurationSeconds == 15
    assert kube.count("PUT", LEASES) == 2


def test_two_replicas_racing_for_a_lease_exactly_one_wins(kube: KubeStandIn) -> None:
    with kube.client(namespace=NS) as setup:
        setup.create(lease("nobody"))
    clients = [kube.client(namespace=NS) for _ in range(2)]
    reads = [c.get(Lease, "extension-server") for c in clients]
    assert md(reads[0]).resourceVersion == md(reads[1]).resourceVersion
    barrier = threading.Barrier(2)
    outcomes: dict[str, int] = {}

    def take(index: int) -> None:
        held = reads[index]
        assert held.spec is not None
        held.spec.holderIdentity = f"replica-{index}"
        barrier.wait()
        try:
            clients[index].replace(held)
            outcomes[f"replica-{index}"] = 200
        except ApiError as error:
            outcomes[f"replica-{index}"] = error.status.code or 0

    threads = [threading.Thread(target=take, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    for c in clients:
        c.close()
    assert sorted(outcomes.values()) == [200, 409]
    winner = next(name for name, code in outcomes.items() if code == 200)
    stored = kube.get("Lease", NS, "extension-server")
    assert stored is not None and stored["spec"]["holderIdentity"] == winner


def test_a_lease_released_with_an_empty_holder_is_stored_as_sent(
    kube: KubeStandIn, client: Client
) -> None:
    """client-go releases a Lease by writing holderIdentity "": kept, not pruned to absent."""
    client.create(lease("a"))
    held = client.get(Lease, "extension-server", namespace=NS)
    assert held.spec is not None
    held.spec.holderIdentity, held.spec.leaseDurationSeconds = "", 1
    released = client.replace(held)
    assert released.spec is not None and released.spec.holderIdentity == ""
    stored = kube.get("Lease", NS, "extension-server")
    assert stored is not None and stored["spec"]["holderIdentity"] == ""
    assert stored["spec"]["leaseDurationSeconds"] == 1


# -- authentication, faults, lifecycle ----------------------------------------------


def test_missing_or_wrong_token_is_401(kube: KubeStandIn) -> None:
    for kwargs in ({"anonymous": True}, {"token": "not-the-token"}):
        with (
            kube.client(namespace=NS, **kwargs) as c,
            pytest.raises(ApiError) as unauthorized,
        ):
            c.get(ListenerContextExample, "web")
        assert api_error(unauthorized) == (401, "Unauthorized")
    assert kube.count() == 2


def test_unavailable_is_503_and_delay_waits(kube: KubeStandIn, client: Client) -> None:
    kube.unavailable = True
    with pytest.raises(ApiError) as unavailable:
        list(client.list(ListenerContextExample))
    assert api_error(unavailable) == (503, "ServiceUnavailable")
    kube.unavailable = False

    kube.delay = 0.3
    with (
        kube.client(namespace=NS, timeout=0.1) as impatient,
        pytest.raises(httpx2.TimeoutException),
    ):
        impatient.get(ListenerContextExample, "web")
    kube.delay = 0.0
    assert list(client.list(ListenerContextExample)) == []


def test_kubeconfig_file_and_restart_on_the_same_port(kube: KubeStandIn, tmp_path: Path) -> None:
    path = kube.kubeconfig(tmp_path / "kubeconfig", namespace=NS)
    assert (path.stat().st_mode & 0o777) == 0o600
    config = KubeConfig.from_file(path)
    with Client(config=config, trust_env=False) as c:
        assert c.namespace == NS
        c.create(policy())
    url = kube.url
    kube.stop()
    assert not kube.running
    with Client(config=config, trust_env=False) as c, pytest.raises(httpx2.ConnectError):
        c.get(ListenerContextExample, "web")
    kube.start()
    assert kube.url == url
    with Client(config=config, trust_env=False) as c:
        assert c.get(ListenerContextExample, "web")["spec"]["username"] == "alice"


# -- pure helpers -----------------------------------------------------------------


def test_merge_patch_is_rfc_7386() -> None:
    target = {"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]}
    patch = {"a": "z", "c": {"f": None}, "l": [3], "n": {"x": None}}
    assert merge_patch(target, patch) == {"a": "z", "c": {"d": "e"}, "l": [3], "n": {}}
    assert merge_patch({"a": 1}, ["x"]) == ["x"]
    assert target["c"] == {"d": "e", "f": "g"}  # not modified in place


def test_label_selectors() -> None:
    labels = {"team": "x", "tier": "web"}

    def matches(selector: str) -> bool:
        return all(r.matches(labels) for r in parse_label_selector(selector))

    assert matches("team=x,tier in (web,api)")
    assert matches("team==x,!gone,tier")
    assert not matches("team!=x")
    assert matches("other notin (a)")
    with pytest.raises(ValueError, match="unable to parse"):
        parse_label_selector("team in x")
