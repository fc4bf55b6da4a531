"""The alert rules: the chart's optional PrometheusRule and docs/operations.md's "Alerts".

Operators are told, as a critical alert, of any hook call answered with an error status
(with failOpen false it freezes the configuration of every Gateway), and, as warnings, of
policies and entries being left out, by reason. The rules live once, in the chart's
files/prometheus-rules.yaml; the PrometheusRule carries them as they are and the docs
show the same YAML. kubernetes-validate has no schema for the Prometheus Operator's CRDs,
so the PrometheusRule's structure is checked here, and each expression must name metrics
(and labels) the server really exports.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from prometheus_client import REGISTRY

import server.app  # noqa: F401  (registers every metric the server exports)
from tests.support.charts import manifests

REPO = Path(__file__).resolve().parent.parent
CHART_DIR = REPO / "charts" / "extension-server"
RULES_FILE = CHART_DIR / "files" / "prometheus-rules.yaml"
OPERATIONS = REPO / "docs" / "operations.md"
RELEASE = "extension-server"
NAMESPACE = "envoy-gateway-system"

# The server's counters the rules are about, with their labels.
ALERTED_METRICS: dict[str, set[str]] = {
    "extension_server_hook_errors_total": {"method", "code"},
    "extension_server_policy_rejections_total": {"reason"},
    "extension_server_entry_rejections_total": {"reason"},
}
RULE_KEYS = {"alert", "expr", "for", "labels", "annotations"}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def rendered(chart: helm.Chart, values: dict[str, Any] | None) -> list[dict[str, Any]]:
    return manifests(chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True))


def rules(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bextension_server_[a-z_]+\b", expr))


def exported_labels() -> dict[str, set[str]]:
    """Every sample name the server's registry exposes, with its collector's label names."""
    found: dict[str, set[str]] = {}
    for name, collector in REGISTRY._names_to_collectors.items():
        found[name] = set(getattr(collector, "_labelnames", ()))
    return found


def test_prometheus_rule_is_off_by_default(chart: helm.Chart) -> None:
    assert not [o for o in rendered(chart, None) if o["kind"] == "PrometheusRule"]


def test_prometheus_rule_carries_the_rules_with_its_labels(chart: helm.Chart) -> None:
    values = {"prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}}
    (rule,) = [o for o in rendered(chart, values) if o["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule) == {"apiVersion", "kind", "metadata", "spec"}
    metadata = rule["metadata"]
    assert (metadata["name"], metadata["namespace"]) == (RELEASE, NAMESPACE)
    assert metadata["labels"]["release"] == "kube-prometheus-stack"
    assert metadata["labels"]["app.kubernetes.io/name"] == "extension-server"
    # The rules as the file has them (Prometheus' own {{ $labels... }} templates untouched).
    assert rule["spec"] == yaml.safe_load(RULES_FILE.read_text())
    assert (
        "{{ $labels.code }}"
        in rules(rule["spec"]["groups"])["ExtensionServerHookErrors"]["annotations"]["description"]
    )


def test_rules_have_the_prometheus_rule_shape() -> None:
    """spec.groups[]: name and rules; each rule an alert with expr, labels, annotations."""
    spec = yaml.safe_load(RULES_FILE.read_text())
    assert set(spec) == {"groups"}
    names = set()
    for group in spec["groups"]:
        assert set(group) == {"name", "rules"} and group["name"]
        for rule in group["rules"]:
            assert set(rule) <= RULE_KEYS and {"alert", "expr"} <= set(rule), rule
            assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"]), rule["alert"]
            assert rule["alert"] not in names
            names.add(rule["alert"])
            assert isinstance(rule["expr"], str) and rule["expr"].count("(") == rule["expr"].count(
                ")"
            )
            assert rule["labels"]["severity"] in ("critical", "warning")
            assert all(isinstance(v, str) for v in rule["labels"].values())
            assert {"summary", "description"} <= set(rule["annotations"])


def test_rules_alert_on_hook_errors_and_rejections() -> None:
    by_name = rules(yaml.safe_load(RULES_FILE.read_text())["groups"])
    hook = by_name["ExtensionServerHookErrors"]
    assert hook["labels"]["severity"] == "critical"
    assert metric_names(hook["expr"]) == {"extension_server_hook_errors_total"}
    assert "[5m]" in hook["expr"] and "for" not in hook  # any error in 5 minutes, at once
    assert re.search(r"sum by \(method, code\)", hook["expr"])
    for name, metric in (
        ("ExtensionServerPolicyRejections", "extension_server_policy_rejections_total"),
        ("ExtensionServerEntryRejections", "extension_server_entry_rejections_total"),
    ):
        rule = by_name[name]
        assert rule["labels"]["severity"] == "warning"
        assert metric_names(rule["expr"]) == {metric}
        assert re.search(r"sum by \(reason\)", rule["expr"])
    # Each expression also catches a series whose first sample is already an error.
    for rule in by_name.values():
        (metric,) = metric_names(rule["expr"])
        assert f"({metric} unless {metric} offset" in rule["expr"]


def test_rules_name_the_server_metrics_and_their_labels() -> None:
    """Every metric an expression names is one of the server's, every label it groups or
    prints by is that metric's."""
    for rule in rules(yaml.safe_load(RULES_FILE.read_text())["groups"]).values():
        for metric in metric_names(rule["expr"]):
            assert metric in ALERTED_METRICS, metric
            used = set(re.findall(r"by \(([^)]*)\)", rule["expr"])[0].replace(" ", "").split(","))
            printed = set(re.findall(r"\$labels\.(\w+)", str(rule["annotations"])))
            assert used | printed <= ALERTED_METRICS[metric], (rule["alert"], used | printed)


def test_the_server_exports_the_alerted_metrics() -> None:
    exported = exported_labels()
    # The registry lookup works: a counter the server has long exported, with its labels.
    assert exported["extension_server_backend_requests_total"] == {"store", "outcome"}
    missing = sorted(set(ALERTED_METRICS) - set(exported))
    if missing:
        pytest.skip(f"the server does not export {', '.join(missing)} (yet)")
    for metric, labels in ALERTED_METRICS.items():
        assert exported[metric] == labels, metric


def test_operations_md_shows_the_same_rules() -> None:
    """docs/operations.md's "Alerts" section holds the rules file's YAML, unchanged."""
    text = OPERATIONS.read_text()
    section = re.search(r"^## Alerts\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "no '## Alerts' section in docs/operations.md"
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", section.group(1), re.S)]
    assert yaml.safe_load(RULES_FILE.read_text()) in blocks
    assert "prometheusRule.enabled" in section.group(1)
