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

from server.app import ServerSettings
from server.audit import AuditSettings
from server.events import EventSettings
from tests.support.builders import https_listener, policy
from tests.support.hook import HookServer, hook_server
from tests.support.kube import KubeStandIn
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
def kube(tmp_path: Path) -> Iterator[KubeStandIn]:
    with KubeStandIn() as standin:
        yield standin
        written = standin.items("Event")
    (tmp_path / "kube-events.log").write_text("".join(json.dumps(e) + "\n" for e in written))


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
