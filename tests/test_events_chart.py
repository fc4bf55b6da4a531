"""The chart's side of Kubernetes Events and the audit trail: values, RBAC, the token mount.

The RBAC is checked as the API server's authorizer would apply it to the requests the
server's own recorder (server/events.py) sends to the API stand-in: two replicas and a
restart, so that every path is taken (create, AlreadyExists then get and patch, a stale
resourceVersion then get and patch). Each request is allowed, each verb granted is used,
and nothing else on Events is allowed. Helpers come from test_chart_render.py.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest

from compiler import errors
from compiler.model import PolicyRef
from server.demo.envoy import free_port
from server.events import EventRecorder, EventWriter
from server.outcomes import Admission, ListenerOutcome, PolicyIdentity, Rejection
from server.settings import ENV_PREFIX
from tests.support.charts import (
    CHART_DIR,
    KUBE_API_DIR,
    KUBE_API_SOURCES,
    NAMESPACE,
    Attributes,
    allowing,
    assert_each_allowed_and_each_grant_used,
    attributes,
    container,
    env_of,
    grants,
    named,
    one,
    pod_spec,
    render_objects,
)
from tests.support.kube import KubeStandIn

EVENTS_ROLE = "extension-server-events"


def subject_of(objs: list[dict[str, Any]]) -> dict[str, str]:
    account = one(objs, "ServiceAccount")["metadata"]
    return {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}


def test_events_are_on_by_default_with_exactly_their_rbac_and_the_token() -> None:
    objs = render_objects({})
    assert named(objs, "ClusterRole", EVENTS_ROLE)["rules"] == [
        {
            "apiGroups": ["events.k8s.io"],
            "resources": ["events"],
            "verbs": ["create", "get", "patch"],
        }
    ]
    binding = named(objs, "ClusterRoleBinding", EVENTS_ROLE)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": EVENTS_ROLE,
    }
    assert binding["subjects"] == [subject_of(objs)]
    env = env_of(objs)
    assert env[ENV_PREFIX + "KUBERNETES_EVENTS"] == "auto"  # on in the pod
    assert env[ENV_PREFIX + "KUBERNETES_EVENTS_INTERVAL"] == "5m"
    assert env[ENV_PREFIX + "AUDIT_LOG"] == "stdout"
    volumes = {v["name"]: v for v in pod_spec(objs)["volumes"]}
    assert volumes["kube-api-access"]["projected"]["sources"] == KUBE_API_SOURCES
    mounts = {m["name"]: m for m in container(objs)["volumeMounts"]}
    assert mounts["kube-api-access"] == {
        "name": "kube-api-access", "mountPath": KUBE_API_DIR, "readOnly": True,
    }  # fmt: skip
    assert pod_spec(objs)["automountServiceAccountToken"] is False  # the chart mounts it


def test_events_off_render_no_rbac_and_no_token_and_the_audit_trail_can_be_off() -> None:
    objs = render_objects({"events": {"enabled": False}, "audit": {"destination": "off"}})
    assert not [o for o in objs if o["metadata"]["name"] == EVENTS_ROLE]
    assert "kube-api-access" not in {v["name"] for v in pod_spec(objs)["volumes"]}
    env = env_of(objs)
    assert env[ENV_PREFIX + "KUBERNETES_EVENTS"] == "off"
    assert env[ENV_PREFIX + "AUDIT_LOG"] == "off"
    # with the rotation watcher on, its token mount stays, and Events still have no RBAC
    vault = {"vault": {"addr": "https://v:8200", "token": {"secretName": "t"}}}
    objs = render_objects({**vault, "events": {"enabled": False}})
    assert "kube-api-access" in {v["name"] for v in pod_spec(objs)["volumes"]}
    assert not [o for o in objs if o["metadata"]["name"] == EVENTS_ROLE]


def test_the_values_flow_and_the_schema_refuses_what_cannot_work() -> None:
    env = env_of(render_objects({"events": {"interval": "90s"}}))
    assert env[ENV_PREFIX + "KUBERNETES_EVENTS_INTERVAL"] == "90s"
    with helm.Chart.load(CHART_DIR) as chart:
        for values in (
            {"events": {"interval": "0s"}},  # the server needs at least 1s
            {"events": {"interval": "500ms"}},
            {"events": {"interval": "5"}},  # no unit
            {"events": {"enabled": "yes"}},
            {"audit": {"destination": "/var/log/audit.log"}},  # no volume for it in the pod
            {"audit": {"destination": "stderr"}},
        ):
            with pytest.raises(helm.HelmValuesError):
                chart.validate_schema(chart.merge_values(values))
        for values in ({"events": {"interval": "1500ms"}}, {"events": {"interval": "1h"}}):
            chart.validate_schema(chart.merge_values(values))


def test_the_notes_say_where_events_and_audit_lines_go() -> None:
    with helm.Chart.load(CHART_DIR) as chart:

        def notes(values: dict[str, Any]) -> str:
            text: str = chart.render(values, name="extension-server", namespace=NAMESPACE)[
                "extension-server/templates/NOTES.txt"
            ]
            return " ".join(text.split())

        on = notes({})
        assert "Kubernetes Events: on each policy" in on and "every 5m" in on
        assert f"ClusterRole {EVENTS_ROLE} lets the server create, get and patch" in on
        assert '"logger": "audit"' in on
        off = notes({"events": {"enabled": False}, "audit": {"destination": "off"}})
        assert "Kubernetes Events: off" in off and "Audit trail: off" in off


def _recorder(kube: KubeStandIn, instance: str) -> EventRecorder:
    recorder = EventRecorder(EventWriter(kube.client(), instance), interval=3600)
    recorder.start()
    return recorder


def test_events_rbac_allows_each_request_the_recorder_makes_and_nothing_unused() -> None:
    objs = render_objects({})
    rules = grants(objs, subject_of(objs))
    web = PolicyIdentity("team-a", "web", "uid-web")
    error = errors.InvalidUsernameError(PolicyRef("team-a", "web"), "spec.username", "bad", "x")
    rejection = Rejection.of(error, uid=web.uid, whole_policy=True)
    shop = PolicyIdentity("team-b", "shop", "uid-shop")
    admission = Admission("default/eg/https", "default/eg", "https", shop, frozenset({"a"}), None)
    same = ListenerOutcome("default/eg/https", (admission,), (rejection,))
    with KubeStandIn() as kube:
        a = _recorder(kube, "replica-a")
        a.observe(same)  # create, in each policy's namespace
        assert a.settled(10)
        b = _recorder(kube, "replica-b")
        b.observe(same)  # AlreadyExists: get, patch
        b.close(5.0)
        a.observe(same)
        a.close(5.0)  # a stale resourceVersion: Conflict, get, patch
        requests = [attributes(r.method, r.path) for r in kube.requests]
        written = kube.items("Event")
    assert {(r.verb, r.resource, r.namespace) for r in requests} == {
        ("create", "events", "team-a"), ("create", "events", "team-b"),
        ("get", "events", "team-a"), ("get", "events", "team-b"),
        ("patch", "events", "team-a"), ("patch", "events", "team-b"),
    }  # fmt: skip
    assert sorted((e["metadata"]["namespace"], e["series"]["count"]) for e in written) == [
        ("team-a", 3), ("team-b", 2),
    ]  # fmt: skip
    assert_each_allowed_and_each_grant_used(rules, requests)
    # and nothing else on Events: no list, watch, update, delete; no core/v1 Events
    for verb in ("list", "watch", "update", "delete", "deletecollection"):
        assert not allowing(rules, Attributes(verb, "events.k8s.io", "events", "team-a", "x"))
    assert not allowing(rules, Attributes("create", "", "events", "team-a", ""))


def test_the_charts_settings_start_the_server_with_events_and_the_audit_trail(
    served: Any, tmp_path: Path
) -> None:
    """The Deployment's environment, outside a pod but with a KUBECONFIG (auto: on)."""
    env = {k: v for k, v in env_of(render_objects({})).items() if k.startswith(ENV_PREFIX)}
    port = free_port()
    env[ENV_PREFIX + "PORT"] = str(port)
    env[ENV_PREFIX + "METRICS_PORT"] = "0"
    with KubeStandIn() as kube:
        env["KUBECONFIG"] = str(kube.kubeconfig(tmp_path / "kubeconfig"))
        process = served([], port, env)
        process.wait_for_log("events.started")
        process.wait_for_log("audit.started")
        assert process.stop(signal.SIGTERM) == 0
        assert kube.requests == []  # nothing to tell yet
    lines = [json.loads(line) for line in process.log_lines if line.startswith("{")]
    assert lines == []  # stdout carries audit lines only, and there was no change
