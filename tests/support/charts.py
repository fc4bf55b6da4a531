"""Helm charts as the tests read them: the objects a render gives, and values as Helm merges them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import re2  # type: ignore[import-untyped]
import yaml

CHART_DIR = Path(__file__).resolve().parents[2] / "charts" / "extension-server"
RELEASE = "extension-server"
NAMESPACE = "envoy-gateway-system"
# Where a pod's Kubernetes clients (lightkube among them) look for the API-server token.
KUBE_API_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def manifests(files: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object of a render (templates' YAML documents; NOTES.txt left out)."""
    return [
        doc
        for path, text in files.items()
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` over `base`, maps merged key by key: what `helm upgrade --reuse-values -f
    extra` gives a release whose values were `base`."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def python_validator(schema: dict[str, Any]) -> Any:
    """jsonschema's Draft 7 validator, with `pattern` read by google-re2 (RE2 syntax, as the
    API server's Go regexp reads it) instead of Python's `re`, which has no `\\p{..}`."""

    def pattern(validator: Any, regex: str, instance: Any, _: Any) -> Iterator[Any]:
        if validator.is_type(instance, "string") and not re2.search(regex, instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {regex!r}")

    return jsonschema.validators.extend(jsonschema.Draft7Validator, {"pattern": pattern})(schema)


def one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matches = [o for o in objs if o["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, got {len(matches)}"
    found: dict[str, Any] = matches[0]
    return found


def pod_spec(objs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(objs, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = pod_spec(objs)["containers"]
    result: dict[str, Any] = found
    return result


def named(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    result: dict[str, Any] = found
    return result


def env_of(objs: list[dict[str, Any]]) -> dict[str, str]:
    env = container(objs)["env"]
    assert all(set(e) == {"name", "value"} for e in env), "env must be plain name/value pairs"
    names = [e["name"] for e in env]
    assert len(names) == len(set(names)), f"duplicate variables: {names}"
    return {e["name"]: e["value"] for e in env}


# The API-server credentials automountServiceAccountToken would give the pod.
KUBE_API_SOURCES = [
    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
    {
        "downwardAPI": {
            "items": [
                {
                    "path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                }
            ]
        }
    },
]


def render_objects(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART_DIR) as chart:
        files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return manifests(files)


# RBAC as the API server's authorizer applies it, for the requests the watcher sends.
_API_PATH = re.compile(
    r"/apis/(?P<group>[^/]+)/[^/]+(?:/namespaces/(?P<namespace>[^/]+))?/(?P<resource>[^/]+)"
    r"(?:/(?P<name>[^/]+))?"
)
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclass(frozen=True)
class Attributes:
    """What the authorizer sees of a request: a create names no object (name ""), a list
    of every namespace no namespace ("")."""

    verb: str
    group: str
    resource: str
    namespace: str
    name: str


def attributes(method: str, path: str) -> Attributes:
    match = _API_PATH.fullmatch(path)
    assert match, path
    name = match["name"] or ""
    verb = _VERBS.get(method) or ("get" if name else "list")
    return Attributes(verb, match["group"], match["resource"], match["namespace"] or "", name)


def grants(objs: list[dict[str, Any]], subject: dict[str, str]) -> list[tuple[Any, str | None]]:
    """Every rule bound to `subject`, with the namespace it applies in (None: all)."""
    roles = {
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
        for o in objs
        if o["kind"] in ("Role", "ClusterRole")
    }
    found: list[tuple[Any, str | None]] = []
    for binding in objs:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if subject not in binding["subjects"]:
            continue
        scope = binding["metadata"].get("namespace")  # None for a ClusterRoleBinding
        ref = binding["roleRef"]
        role = roles[(ref["kind"], scope if ref["kind"] == "Role" else None, ref["name"])]
        found.extend((rule, scope) for rule in role["rules"])
    return found


def allowing(rules: list[tuple[Any, str | None]], request: Attributes) -> list[tuple[int, str]]:
    """(rule index, verb) of each bound rule that allows `request`."""
    return [
        (i, request.verb)
        for i, (rule, scope) in enumerate(rules)
        if scope in (None, request.namespace)
        and request.group in rule["apiGroups"]
        and request.resource in rule["resources"]
        and request.verb in rule["verbs"]
        and ("resourceNames" not in rule or request.name in rule["resourceNames"])
    ]


def assert_each_allowed_and_each_grant_used(
    rules: list[tuple[Any, str | None]], requests: list[Attributes]
) -> None:
    """Every request is allowed by a bound rule, and every verb a rule grants is used."""
    used: set[tuple[int, str]] = set()
    for request in requests:
        allowed = allowing(rules, request)
        assert allowed, f"the chart's RBAC refuses {request}"
        used.update(allowed)
    granted = {(i, verb) for i, (rule, _) in enumerate(rules) for verb in rule["verbs"]}
    assert granted == used, f"granted but never used: {granted - used}"
