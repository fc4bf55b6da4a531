"""Kubernetes Events on each policy, written by the real recorder through the real lightkube
client to the Kubernetes API stand-in (tests/support/kube.py), which validates events.k8s.io/v1
Events as the API server does.

The story of a policy's owner: a rejected policy gets a Warning naming its failure family
with the message `compile` prints; an accepted one gets a Normal Event when the users it
admits on a Gateway change, and when a new version of its secret reaches it. Envoy Gateway
asks again on every translation: the same outcome 100 times is one Event with a count,
written at once and then at most once per interval. Whatever the API server does (hang,
answer 500), `observe` returns at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from backends import CredentialResolver, ResolverSettings
from compiler import errors
from compiler.model import PolicyRef
from compiler.pipeline import compile_listener, load_policies
from server.app import ExtensionServer, ServerSettings, StartupError
from server.audit import AuditSettings
from server.changes import Place
from server.cli import main
from server.events import (
    NOTE_LIMIT,
    RETRY_DELAY,
    UNRESOLVED_REASONS,
    WARNING_REASONS,
    EventFolder,
    EventRecorder,
    EventSettings,
    EventWriter,
    KubernetesUnreachable,
    build_recorder,
    rejection_event,
    warning_reason,
)
from server.outcomes import (
    Admission,
    ListenerOutcome,
    PolicyIdentity,
    Rejection,
    Source,
)
from server.settings import server_settings
from tests.support.builders import http_listener, policy, router
from tests.support.describe import describe, events_of
from tests.support.kube import KubeStandIn
from tests.support.logged import events as logged
from tests.support.secrets import remember

EVENTS = "/apis/events.k8s.io/v1/namespaces/"
LISTENER = "default/eg/https"
WEB = PolicyIdentity("team-a", "web", "2b0f6c1e-web")
SHOP = PolicyIdentity("team-a", "shop", "9d41aa07-shop")


Recorders = Callable[..., EventRecorder]


@pytest.fixture
def recorders(kube: KubeStandIn) -> Iterator[Recorders]:
    """Started recorders writing to the stand-in (as replica `instance`); closed after."""
    made: list[EventRecorder] = []

    def make(
        interval: float = 60.0, instance: str = "replica-a", *, start: bool = True, **kw: Any
    ) -> EventRecorder:
        recorder = EventRecorder(
            EventWriter(kube.client(), f"extension-server-{instance}"), interval, **kw
        )
        if start:
            recorder.start()
        made.append(recorder)
        return recorder

    yield make
    kube.release()
    for recorder in made:
        recorder.close(5.0)


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    """A bound on a wait (never a measurement)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.01)


def writes(kube: KubeStandIn) -> list[str]:
    """The writes the API stand-in received (creates and patches of Events)."""
    return [r.method for r in kube.requests if r.method in ("POST", "PATCH")]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def outcome(
    *admissions: Admission, rejections: tuple[Rejection, ...] = (), listener: str = LISTENER
) -> ListenerOutcome:
    return ListenerOutcome(listener, admissions, rejections)


def admits(
    who: PolicyIdentity,
    *users: str,
    source: Source | None = None,
    listener: str = LISTENER,
    section: str = "https",
) -> Admission:
    return Admission(listener, "default/eg", section, who, frozenset(users), source)


def rejected(error: errors.PolicyError, uid: str = WEB.uid or "", **kw: Any) -> Rejection:
    return Rejection.of(error, uid=uid, whole_policy=kw.pop("whole_policy", True), **kw)


def only_event(kube: KubeStandIn, who: PolicyIdentity = WEB) -> dict[str, Any]:
    (event,) = events_of(kube, who.namespace, who.name, who.uid)
    return event


# --- Warnings: one per failure family ------------------------------------------------------


def every_family() -> list[type[errors.PolicyError]]:
    found: list[type[errors.PolicyError]] = []
    pending = [errors.PolicyError]
    while pending:
        cls = pending.pop()
        found.extend(cls.__subclasses__())
        pending.extend(cls.__subclasses__())
    return sorted(set(found), key=lambda c: c.reason)


def test_every_failure_family_has_its_own_warning_reason() -> None:
    families = {cls.reason for cls in every_family()}
    assert families - {"unresolved"} == set(WARNING_REASONS)
    reasons = [
        warning_reason(rejected(cls(PolicyRef("a", "b"), "f", "p", "x"))) for cls in every_family()
    ]
    assert len(reasons) == len(set(reasons)), reasons
    assert all(reason[0].isupper() and reason.isalnum() for reason in reasons)
    # unresolved: by what the store answered, never by the message's words
    unresolved = errors.UnresolvedCredentialError(PolicyRef("a", "b"), "f", "p", "x")
    by_outcome = {o: warning_reason(rejected(unresolved, outcome=o)) for o in UNRESOLVED_REASONS}
    assert by_outcome["not_found"] == "SecretNotFound"
    assert by_outcome["forbidden"] == "SecretAccessDenied"
    assert by_outcome["unavailable"] == by_outcome["timeout"] == "StoreUnavailable"
    assert warning_reason(rejected(unresolved)) == "CredentialsUnresolved"


def errors_of(raws: list[bytes]) -> list[errors.PolicyError]:
    """The compiler's own errors for these policies (no store configured)."""
    resolver = CredentialResolver(ResolverSettings(), {})
    # a chain named after no Gateway: the policies of every namespace apply there
    listener = http_listener(router(), name="any-namespace")
    return list(compile_listener(listener, load_policies(raws, resolver)).errors)


def compiled_errors() -> list[errors.PolicyError]:
    """Real rejections: the compiler's own errors for broken policies (no store needed)."""
    remember("pw-malformed-1")  # the one password not given through tests.builders.policy
    raws = [
        policy("bad-user", "a:b", "pw-bad-user-1"),
        policy("bad-password", "carol", "pw\x07bell"),
        policy("bad-header", "dave", "pw-bad-header", header="Authorization"),
        policy("first", "erin", "pw-first-1234"),
        policy("second", "erin", "pw-second-123"),
        policy("no-target", "frank", "pw-no-target-1", targetRefs=[]),
        policy(
            "tenant",
            "gina",
            None,
            passwordFrom={"vault": {"path": "secret/data/gateways/other/x", "key": "pw"}},
        ),
        b'{"apiVersion": "example.extensions.io/v1alpha1", "kind": "ListenerContextExample",'
        b' "metadata": {"name": "broken", "namespace": "default"}, "spec": {"targetRefs":'
        b' [{"kind": "Gateway", "name": "eg"}], "username": 5, "password": "pw-malformed-1"}}',
    ]
    return errors_of(raws)


def test_one_warning_per_failure_family_with_the_message_compile_prints(
    kube: KubeStandIn, recorders: Recorders
) -> None:
    real = compiled_errors()
    assert {e.reason for e in real} >= {
        "invalid_username", "invalid_password", "invalid_header", "conflict", "malformed",
        "no_target", "tenancy",
    }  # fmt: skip
    made = [
        cls(PolicyRef("team-a", "web"), "spec.x", "what is wrong", "what to do")
        for cls in every_family()
    ]
    rejections = [rejected(e, uid=f"uid-{e.policy.name}") for e in real] + [
        rejected(e) for e in made
    ]
    recorder = recorders()
    for rejection in rejections:
        recorder.observe(outcome(rejections=(rejection,)))
    wait_for(lambda: len(kube.items("Event")) == len(rejections), "one Event per rejection")
    for rejection in rejections:
        who = rejection.policy
        (event,) = [
            e for e in events_of(kube, who.namespace, who.name, who.uid)
            if e["note"] == rejection.message and e["reason"] == warning_reason(rejection)
        ]  # fmt: skip
        assert event["type"] == "Warning"
        assert event["reason"] == warning_reason(rejection)
        assert event["action"] == "Compile"
        assert event["metadata"]["namespace"] == who.namespace
        assert event["regarding"] == {
            "apiVersion": "example.extensions.io/v1alpha1",
            "kind": "ListenerContextExample",
            "namespace": who.namespace,
            "name": who.name,
            "uid": who.uid,
        }
        assert event["reportingController"] == "extension-server"
        assert event["reportingInstance"] == "extension-server-replica-a"
        assert "series" not in event or event["series"] is None
    reasons = {e["reason"] for e in kube.items("Event")}
    assert {"InvalidUsername", "InvalidPassword", "Conflict", "MalformedPolicy"} <= reasons
    assert len(reasons) == len(every_family())  # one reason per family, 'unresolved' once
    assert "pw-bad-user-1" not in json.dumps(kube.items("Event"))


# --- folding --------------------------------------------------------------------------------


def test_a_hundred_identical_outcomes_are_one_event_written_twice(
    kube: KubeStandIn, recorders: Recorders
) -> None:
    """Created at the first, counted in memory after, written again at the interval (here
    at close, which writes what is pending): two writes for 100 calls."""
    error = errors.InvalidUsernameError(PolicyRef("team-a", "web"), "spec.username", "bad", "fix")
    same = outcome(admits(SHOP, "alice"), rejections=(rejected(error),))
    recorder = recorders(interval=3600)
    recorder.observe(same)
    wait_for(lambda: len(writes(kube)) == 2, "the first Warning and UsersApplied")
    for _ in range(99):
        recorder.observe(same)
    assert recorder.settled(10)
    assert writes(kube) == ["POST", "POST"]  # nothing more within the interval
    recorder.close(5.0)
    print(
        f"\n100 identical outcomes: {writes(kube).count('POST')} creates and "
        f"{writes(kube).count('PATCH')} patch of the series ({len(writes(kube))} writes)"
    )
    assert sorted(writes(kube)) == ["PATCH", "POST", "POST"]
    warning = only_event(kube)
    assert warning["series"]["count"] == 100
    assert warning["series"]["lastObservedTime"] >= warning["eventTime"]
    applied = only_event(kube, SHOP)
    assert applied["reason"] == "UsersApplied" and applied.get("series") is None  # once


def test_repeats_are_written_at_most_once_per_interval(
    kube: KubeStandIn, recorders: Recorders
) -> None:
    error = errors.TenancyError(PolicyRef("team-a", "web"), "vault.path", "outside", "fix")
    same = outcome(rejections=(rejected(error),))
    recorder = recorders(interval=0.3)
    recorder.observe(same)
    wait_for(lambda: writes(kube) == ["POST"], "the create")
    for _ in range(10):
        recorder.observe(same)
    wait_for(lambda: writes(kube) == ["POST", "PATCH"], "the series patch after the interval")
    assert only_event(kube)["series"]["count"] == 11
    time.sleep(1.0)  # three intervals with no new occurrence
    assert writes(kube) == ["POST", "PATCH"]  # nothing to add: nothing written
    patch = kube.patches[-1][1]
    assert set(patch) == {"metadata", "series"} and set(patch["metadata"]) == {"resourceVersion"}


def test_other_replicas_and_restarts_add_to_the_same_event(
    kube: KubeStandIn, recorders: Recorders
) -> None:
    """The name is the content's: a second replica's create finds it (409), reads it and
    raises its count; a stale resourceVersion (409 Conflict) is read again."""
    error = errors.ConflictError(PolicyRef("team-a", "web"), "spec.username", "taken", "rename")
    same = outcome(rejections=(rejected(error),))
    a, b = recorders(instance="a"), recorders(instance="b")
    a.observe(same)
    wait_for(lambda: writes(kube) == ["POST"], "replica a's create")
    b.observe(same)
    wait_for(lambda: writes(kube) == ["POST", "POST", "PATCH"], "replica b adding to it")
    assert only_event(kube)["series"]["count"] == 2
    a.observe(same)
    a.close(5.0)  # a's resourceVersion is b's predecessor: conflict, read, patch
    event = only_event(kube)
    assert event["series"]["count"] == 3
    assert event["reportingInstance"] == "extension-server-a"  # who reported it first
    methods = [r.method for r in kube.requests]
    assert methods.count("GET") == 2  # b after AlreadyExists, a after Conflict
    restarted = recorders(instance="a2")  # a restart: a new process, the same Event
    restarted.observe(same)
    restarted.close(5.0)
    assert only_event(kube)["series"]["count"] == 4


def test_an_expired_event_is_created_again(kube: KubeStandIn, recorders: Recorders) -> None:
    error = errors.TooLargeError(PolicyRef("team-a", "web"), "usersFrom", "too many", "split")
    same = outcome(rejections=(rejected(error),))
    recorder = recorders(interval=0.2)
    recorder.observe(same)
    wait_for(lambda: writes(kube) == ["POST"], "the create")
    name = only_event(kube)["metadata"]["name"]
    assert kube.delete("Event", "team-a", name)  # the API server's TTL ran out
    recorder.observe(same)
    wait_for(lambda: writes(kube) == ["POST", "PATCH", "POST"], "a new Event")
    event = only_event(kube)
    assert event["metadata"]["name"] == name and event.get("series") is None


def test_long_notes_are_cut_to_the_apis_limit(kube: KubeStandIn, recorders: Recorders) -> None:
    """events.k8s.io allows 1 KiB of note (the stand-in refuses more, as the API server)."""
    long = errors.InvalidUsernameError(
        PolicyRef("team-a", "web"), "spec.users", "é" * 2000, "fix it"
    )
    many = [f"user-{n:05d}" for n in range(5000)]
    recorder = recorders()
    recorder.observe(outcome(admits(SHOP, *many), rejections=(rejected(long),)))
    wait_for(lambda: len(kube.items("Event")) == 2, "both Events")
    warning, applied = only_event(kube), only_event(kube, SHOP)
    assert len(warning["note"].encode()) <= NOTE_LIMIT and warning["note"].endswith("...")
    assert len(applied["note"].encode()) <= NOTE_LIMIT
    assert applied["note"].startswith("admits 5000 users on Gateway default/eg listener https: ")
    assert applied["note"].endswith(" more)") and "user-00000, user-00001" in applied["note"]
    assert metric("extension_server_kubernetes_event_writes_total", result="refused") == 0


# --- the API server misbehaves: observe does not care -------------------------------------------


def test_a_hung_api_server_never_holds_up_observe(kube: KubeStandIn, recorders: Recorders) -> None:
    error = errors.InvalidPasswordError(PolicyRef("team-a", "web"), "spec.password", "bad", "fix")
    same = outcome(rejections=(rejected(error),))
    recorder = recorders(interval=3600)
    kube.hang()
    recorder.observe(same)
    wait_for(lambda: kube.waiting == 1, "the create to reach the hung server")
    for _ in range(1000):
        recorder.observe(same)  # each returns while the server still holds the request
    assert kube.waiting == 1 and kube.items("Event") == []
    assert recorder.settled(10)  # folded meanwhile, by the other thread
    kube.release()
    recorder.close(5.0)
    assert only_event(kube)["series"]["count"] == 1001


@pytest.mark.parametrize("fault", ["failing", "unavailable"])
def test_an_api_server_answering_500_or_503_never_fails_observe(
    kube: KubeStandIn, recorders: Recorders, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    caplog.set_level(logging.WARNING)
    error = errors.PlaintextForbiddenError(PolicyRef("team-a", "web"), "spec.password", "no", "x")
    same = outcome(rejections=(rejected(error),))
    failed = metric("extension_server_kubernetes_event_writes_total", result="failed")
    setattr(kube, fault, True)
    recorder = recorders(interval=0.2)
    for _ in range(50):
        recorder.observe(same)
    wait_for(lambda: writes(kube).count("POST") >= 2, "a create and its retry")
    assert kube.items("Event") == []
    assert metric("extension_server_kubernetes_event_writes_total", result="failed") > failed
    (line,) = logged(caplog, "events.write_failed")  # bounded: one line a minute
    assert line["status"] == (500 if fault == "failing" else 503) and line["retried"] == "yes"
    setattr(kube, fault, False)
    wait_for(lambda: kube.items("Event"), "the Event once the server answers")
    assert only_event(kube)["series"]["count"] == 50  # nothing lost


@pytest.mark.parametrize("fault", ["denied", "outage"])
def test_a_refused_token_is_retried_once_an_interval_an_outage_soon(
    kube: KubeStandIn, fault: str
) -> None:
    """401/403 (no RBAC yet) wait the interval: thousands of Events do not knock every 10 s;
    an outage (500) is tried again after 10 s."""
    error = errors.TooLargeError(PolicyRef("team-a", "web"), "usersFrom", "too many", "split")
    kube.failing = fault == "outage"
    client = kube.client(token="not-the-token") if fault == "denied" else kube.client()
    recorder = EventRecorder(EventWriter(client, "extension-server-a"), interval=3600)
    recorder.start()
    recorder.observe(outcome(rejections=(rejected(error),)))
    wait_for(lambda: writes(kube) == ["POST"], "the refused create")
    wait_for(lambda: recorder.folder.wait_time() is not None, "the retry to be planned")
    wait = recorder.folder.wait_time()
    retried_within = 3600.0 if fault == "denied" else RETRY_DELAY
    assert wait is not None and retried_within - 5 < wait <= retried_within
    recorder.close(0.0)
    kube.failing = False


def test_a_full_queue_drops_counts_and_says_so_once(
    recorders: Recorders, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    before = metric("extension_server_observer_dropped_total", observer="events", why="queue_full")
    recorder = recorders(start=False, queue_size=5)  # nothing drains it
    for _ in range(12):
        recorder.observe(outcome())
    for _ in range(100):
        recorder.rotated(WEB, Source("vault", "secret/data/x", "2"))
    dropped = metric("extension_server_observer_dropped_total", observer="events", why="queue_full")
    assert dropped - before == 107
    (line,) = logged(caplog, "observer.dropped")  # the first drop; the rest wait a minute
    assert line["observer"] == "events" and line["why"] == "queue_full=1"


def test_the_events_held_are_bounded() -> None:
    drops: list[tuple[str, int]] = []
    folder = EventFolder(60, max_events=3, on_drop=lambda why, n: drops.append((why, n)))
    for n in range(5):
        error = errors.InvalidUsernameError(PolicyRef("team-a", f"p{n}"), "f", "bad", "fix")
        folder.record(rejection_event(rejected(error)))
    assert len(folder) == 3 and drops == [("cache_full", 1), ("cache_full", 1)]


# --- Normal Events: users applied and removed, credentials rotated ---------------------------


def test_users_applied_removed_and_rotated_on_the_policy(
    kube: KubeStandIn, recorders: Recorders
) -> None:
    v3, v4 = (Source("vault", "secret/data/gateways/team-a/web", v) for v in ("3", "4"))
    recorder = recorders()
    steps = [
        outcome(admits(WEB, "alice", "bob", source=v3)),  # the baseline
        outcome(admits(WEB, "alice", "bob", source=v3)),  # the same: nothing new
        outcome(admits(WEB, "alice", "bob", "carol", source=v3)),
        outcome(admits(WEB, "alice", "carol", source=v3)),
        outcome(admits(WEB, "alice", "carol", source=v4)),  # the new version compiled
        outcome(admits(SHOP, "zed"), listener="default/other/http"),  # another listener only
    ]
    for step in steps[:4]:
        recorder.observe(step)
    recorder.rotated(WEB, v4)  # the watcher applied version 4
    for step in steps[4:]:
        recorder.observe(step)
    gone = errors.UnresolvedCredentialError(PolicyRef("team-a", "web"), "vault.path", "gone", "x")
    recorder.observe(outcome(rejections=(rejected(gone, outcome="not_found"),)))
    assert recorder.settled(10)
    recorder.close(5.0)
    notes = [
        (e["type"], e["reason"], e["note"], (e.get("series") or {}).get("count", 1))
        for e in events_of(kube, "team-a", "web", WEB.uid)
    ]
    on = "Gateway default/eg listener https"
    rotation = "now reads version 4 of vault secret secret/data/gateways/team-a/web"
    assert notes[:4] == [
        ("Normal", "UsersApplied", f"admits 2 users on {on}: alice, bob", 1),
        ("Normal", "UsersApplied", f"admits 3 users on {on}; added 1: carol", 1),
        ("Normal", "UsersRemoved", f"admits 2 users on {on}; removed 1: bob", 1),
        # the watcher's call and the compiled answer: one Event
        ("Normal", "CredentialsRotated", rotation, 2),
    ]
    # then the secret is gone: its users leave, and why (one outcome: either order)
    assert sorted(notes[4:]) == [
        (
            "Normal",
            "UsersRemoved",
            f"admits no user on {on}; removed 2 (SecretNotFound): alice, carol",
            1,
        ),
        ("Warning", "SecretNotFound", str(gone), 1),
    ]
    # default/other/http is another listener: this one not being sent removes nothing
    assert len(notes) == 6


def test_a_place_without_a_gateway_name_is_the_envoy_listener() -> None:
    assert str(Place("", "", "default/eg/http")) == "Envoy listener default/eg/http"
    assert str(Place("default/eg", "", "x")) == "Gateway default/eg"


# --- what a policy's owner sees ------------------------------------------------------------------


def test_kubectl_describe_of_a_rejected_and_an_accepted_policy(
    kube: KubeStandIn, recorders: Recorders
) -> None:
    raw = policy("web", "a:b", "pw-describe-1", "team-a")
    rejected_policy = kube.put_policy(json.loads(raw))
    source = {"awsSecretsManager": {"secretId": "gateways/team-a/shop"}}
    accepted_policy = kube.put_policy(
        json.loads(policy("shop", "alice", None, "team-a", passwordFrom=source))
    )
    web = PolicyIdentity("team-a", "web", rejected_policy["metadata"]["uid"])
    shop = PolicyIdentity("team-a", "shop", accepted_policy["metadata"]["uid"])
    (error,) = errors_of([raw])
    bad = Rejection.of(error, uid=web.uid, whole_policy=False)
    v7 = Source("aws", "gateways/team-a/shop", "a1b2c3d4-0007")
    recorder = recorders(interval=3600)
    for n in range(100):
        users = ("alice", "bob") if n < 50 else ("alice", "bob", "carol")
        recorder.observe(outcome(admits(shop, *users, source=v7), rejections=(bad,)))
    recorder.rotated(shop, Source("aws", "gateways/team-a/shop", "a1b2c3d4-0008"))
    recorder.close(5.0)
    for obj in (rejected_policy, accepted_policy):
        text = describe(kube, obj)
        print("\n$ kubectl describe listenercontextexample -n team-a " + obj["metadata"]["name"])
        print(text)
    rows = [line.split()[:2] for line in describe(kube, rejected_policy).splitlines()[7:]]
    assert rows == [["Warning", "InvalidUsername"]]
    assert "(x100 over" in describe(kube, rejected_policy)
    accepted = describe(kube, accepted_policy)
    rows = [line.split()[:2] for line in accepted.splitlines()[7:]]
    assert rows == [["Normal", "UsersApplied"]] * 2 + [["Normal", "CredentialsRotated"]]
    assert "added 1: carol" in accepted and "version a1b2c3d4-0008 of aws" in accepted
    print(f"Event writes for these 100 calls: {len(writes(kube))} ({writes(kube)})")


# --- where Events are on, and the server that builds and closes them ----------------------


@pytest.fixture
def no_kubernetes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Outside a pod, no KUBECONFIG, and a HOME without ~/.kube/config."""
    for name in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_the_cli_defaults_are_auto_every_five_minutes_and_stdout() -> None:
    command = main.commands["serve"]
    with command.make_context("serve", []) as context:
        settings = server_settings(context.params)
    assert settings.events == EventSettings(mode="auto", interval=300.0)
    assert settings.audit == AuditSettings(destination="stdout")
    assert ServerSettings().events.mode == "off" and ServerSettings().audit.destination == "off"


def test_auto_writes_events_where_kubernetes_can_be_reached(
    kube: KubeStandIn,
    no_kubernetes: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert build_recorder(EventSettings(mode="auto")) is None  # a laptop without a cluster
    assert build_recorder(EventSettings(mode="off")) is None
    with pytest.raises(KubernetesUnreachable, match="no Kubernetes configuration"):
        build_recorder(EventSettings(mode="on"))
    # a pod whose ServiceAccount token is not mounted: said once, served without Events
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    caplog.set_level(logging.WARNING)
    assert build_recorder(EventSettings(mode="auto")) is None
    (line,) = logged(caplog, "events.disabled")
    assert "no Kubernetes configuration" in line["reason"]
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    # KUBECONFIG set: on
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig(no_kubernetes / "kubeconfig")))
    recorder = build_recorder(EventSettings(mode="auto", interval=42))
    assert recorder is not None and recorder.folder.interval == 42
    assert recorder.writer.instance.startswith("extension-server-")


def test_the_server_builds_both_and_its_stop_does_not_wait_for_a_hung_api_server(
    kube: KubeStandIn, no_kubernetes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig(no_kubernetes / "kubeconfig")))
    audit_log = no_kubernetes / "audit.log"
    settings = ServerSettings(
        host="127.0.0.1",
        port=0,
        shutdown_grace=1.0,
        events=EventSettings(mode="auto"),
        audit=AuditSettings(destination=str(audit_log)),
    )
    server = ExtensionServer(settings)
    assert [type(o).__name__ for o in server.observers.observers] == ["AuditTrail", "EventRecorder"]
    server.start()
    kube.hang()
    error = errors.InvalidUsernameError(PolicyRef("team-a", "web"), "spec.username", "bad", "fix")
    server.observers.observe(outcome(admits(WEB, "alice"), rejections=(rejected(error),)))
    wait_for(lambda: kube.waiting == 1, "an Event write held by the API server")
    server.stop()  # within the grace, the write still held
    assert kube.waiting >= 1
    assert json.loads(audit_log.read_text())["event"] == "access.snapshot"


def test_a_server_whose_start_fails_closes_its_audit_file(no_kubernetes: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = ServerSettings(
            host="127.0.0.1",
            port=taken.getsockname()[1],
            audit=AuditSettings(destination=str(no_kubernetes / "audit.log")),
        )
        with pytest.raises(StartupError, match="--port"):
            ExtensionServer(settings)
    assert (no_kubernetes / "audit.log").exists()
    held = []
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            held.append(os.readlink(fd))
    assert str(no_kubernetes / "audit.log") not in held
