"""The hook tells each policy's owner what became of the policy: Events and the audit trail.

A team applies policies; Envoy Gateway calls the hook (real gRPC, an in-process server with
Kubernetes Events on, against the Kubernetes API stand-in of tests/support/kube.py, and the
audit trail written to a file). The rejected policy gets a Warning naming its failure
family, the accepted one a Normal Event naming the users applied; the security team's
audit trail has one line per place where who is admitted changed. Envoy Gateway repeats the
call for every listener at every translation: that makes no new Event. Nothing holds a
password or a hash (the suite's secret scan reads the audit file and the Events).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.route.v3 import route_pb2

from compiler.virtual_hosts import GatewayListener
from server.api import extension_pb2 as api
from server.app import ServerSettings
from server.audit import AuditSettings
from server.events import EventSettings
from tests.support.builders import http_listener, https_listener, policy
from tests.support.hook import HookServer, hook_server
from tests.support.kube import KubeStandIn
from tests.support.request_control import virtual_host
from tests.support.secrets import remember

NAMESPACE = "team-a"
GATEWAY = [{"kind": "Gateway", "name": "eg"}]


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """A bound on a wait (never a measurement)."""
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.05)
    return found


@pytest.fixture
def hook(
    kube: KubeStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[HookServer]:
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig(tmp_path / "kubeconfig")))
    settings = ServerSettings(
        events=EventSettings(mode="on", interval=60.0),
        audit=AuditSettings(destination=str(tmp_path / "audit.log")),
    )
    with hook_server(settings) as server:
        yield server


def events_about(kube: KubeStandIn, name: str) -> list[dict[str, Any]]:
    return [e for e in kube.items("Event") if e.get("regarding", {}).get("name") == name]


def test_a_rejected_and_an_accepted_policy_each_hear_what_became_of_them(
    hook: HookServer, kube: KubeStandIn, tmp_path: Path
) -> None:
    remember("web-password", "colon-user-secret-pw")
    good = policy("web", "webuser", "web-password", namespace=NAMESPACE, targets=GATEWAY)
    bad = policy("colon", "a:b", "colon-user-secret-pw", namespace=NAMESPACE, targets=GATEWAY)
    for copy in range(100):  # every translation asks again, for every listener
        listener = https_listener("https", gateway=f"{NAMESPACE}/eg")
        answered = hook.call(f"{NAMESPACE}/eg/https-{copy % 4}", good, bad, listener=listener)
        assert answered.code == grpc.StatusCode.OK

    warned = wait_for(lambda: events_about(kube, "colon"), "the rejected policy's Event")
    (warning,) = warned
    assert warning["type"] == "Warning" and warning["reason"] == "InvalidUsername"
    assert warning["regarding"]["kind"] == "ListenerContextExample"
    assert warning["regarding"]["namespace"] == NAMESPACE
    assert "user name 'a:b' contains ':'" in warning["note"]

    (applied,) = wait_for(lambda: events_about(kube, "web"), "the accepted policy's Event")
    assert applied["type"] == "Normal" and applied["reason"] == "UsersApplied"
    assert "webuser" in applied["note"] and f"{NAMESPACE}/eg" in applied["note"]

    lines = wait_for(
        lambda: [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()],
        "the audit trail",
    )
    web = [line for line in lines if line["policy"] == f"{NAMESPACE}/web"]
    assert {line["listener"] for line in web} == {f"{NAMESPACE}/eg/https-{n}" for n in range(4)}
    assert all(line["added"] == ["webuser"] and line["users"] == 1 for line in web)
    assert all(line["gateway"] == f"{NAMESPACE}/eg" for line in web)
    assert not [line for line in lines if line["policy"] == f"{NAMESPACE}/colon"]


def test_with_merged_gateways_the_translation_hook_tells_each_owner_of_its_virtual_hosts(
    hook: HookServer, kube: KubeStandIn, tmp_path: Path
) -> None:
    """Both hooks on, two namespaces' Gateways merged on one plain-HTTP port: team-b's
    policy is not applied on the chain named after team-a's Gateway, but the Translation
    hook admits bob on team-b's virtual hosts. The audit trail and team-b's Event say so,
    under the route configuration's name; the listener hook and the Translation hook,
    repeated at every translation, never undo each other's news."""
    alice = policy(
        "alice", "alice", "alice-password", namespace="team-a",
        targets=[{"kind": "Gateway", "name": "gw-a", "sectionName": "http"}],
    )  # fmt: skip
    bob = policy(
        "bob", "bob", "bob-password", namespace="team-b",
        targets=[{"kind": "Gateway", "name": "gw-b"}],
    )  # fmt: skip
    routes = route_pb2.RouteConfiguration(
        name="default/eg/http",  # what the listener's manager reads by RDS
        virtual_hosts=[
            virtual_host("a", ["a.example"], "backend", GatewayListener("team-a", "gw-a", "http")),
            virtual_host("b", ["b.example"], "backend", GatewayListener("team-b", "gw-b", "http")),
        ],
    )
    translation = api.PostTranslateModifyRequest(
        post_translate_context=api.PostTranslateExtensionContext(
            extension_resources=[api.ExtensionResource(unstructured_bytes=p) for p in (alice, bob)]
        ),
        routes=[routes],
    )
    for _ in range(5):  # each translation: the listener hook, then the Translation hook
        listener = http_listener(name="team-a/gw-a/http")
        answered = hook.call("team-a/gw-a/http", alice, bob, listener=listener)
        assert answered.code == grpc.StatusCode.OK
        del translation.listeners[:]
        translation.listeners.append(answered.listener)
        hook.stub.PostTranslateModify(translation, timeout=30)

    (told,) = wait_for(lambda: events_about(kube, "bob"), "team-b's Event")
    assert told["type"] == "Normal" and told["reason"] == "UsersApplied"
    assert "bob" in told["note"] and "team-b/gw-b" in told["note"]

    def audit() -> list[dict[str, Any]]:
        return [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]

    wait_for(lambda: [line for line in audit() if line["policy"] == "team-b/bob"], "bob's line")
    time.sleep(0.5)  # an undoing would be written by now: there is none
    seen = [
        (line["policy"], line["listener"], line["gateway"], line["event"], line["added"])
        for line in audit()
    ]
    assert sorted(seen) == [
        ("team-a/alice", "default/eg/http", "team-a/gw-a", "access.snapshot", ["alice"]),
        ("team-a/alice", "team-a/gw-a/http", "team-a/gw-a", "access.snapshot", ["alice"]),
        ("team-b/bob", "default/eg/http", "team-b/gw-b", "access.snapshot", ["bob"]),
    ]
