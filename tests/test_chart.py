"""The Helm chart under charts/extension-server, rendered and linted offline.

Rendering, linting and values-schema checks go through helm-python-sdk, which wraps Helm's own
Go SDK: no helm binary and no cluster are needed. The CRD's openAPIV3Schema is checked twice:
with Helm's Go JSON-schema validator (Go regexp, the engine family the API server uses for
`pattern`) and, when installed, with Python's jsonschema.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

CHART_DIR = Path(__file__).resolve().parent.parent / "charts" / "extension-server"
CRD_FILE = CHART_DIR / "crds" / "listenercontextexamples.example.extensions.io.yaml"
RELEASE = "extension-server"
NAMESPACE = "envoy-gateway-system"

# The policy from the seed's "Testing" section.
SEED_POLICY: dict[str, Any] = {
    "apiVersion": "example.extensions.io/v1alpha1",
    "kind": "ListenerContextExample",
    "metadata": {"name": "listeneruser"},
    "spec": {
        "targetRefs": [
            {"kind": "Gateway", "name": "eg", "group": "gateway.networking.k8s.io"},
        ],
        "username": "user",
        "password": "p@ssw0rd",
    },
}

BAD_USERNAMES = ["a:b", ":", "#user", " user", "user ", "a\tb", "a\x7fb", "user\r", ""]
GOOD_USERNAMES = ["user", "a b", "a#b", "user#", "ünïcødé", "x" * 256]


# --- helpers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> dict[str, str]:
    return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def objects(chart: helm.Chart, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart's templates render (NOTES.txt excluded)."""
    found: list[dict[str, Any]] = []
    for path, text in render(chart, values).items():
        if not path.endswith((".yaml", ".yml")):
            continue
        found.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return found


def one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matches = [o for o in objs if o["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, got {len(matches)}"
    found: dict[str, Any] = matches[0]
    return found


def container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    found: dict[str, Any] = containers[0]
    return found


def lint_errors(values: dict[str, Any] | None = None, **opts: Any) -> list[Any]:
    report = helm.lint(CHART_DIR, values, namespace=NAMESPACE, **opts)
    assert report["total_charts_linted"] == 1
    errors: list[Any] = report["errors"]
    return errors + [m for m in report["messages"] if m["severity"] >= 3]


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(CRD_FILE.read_text()) if d]
    assert len(docs) == 1
    found: dict[str, Any] = docs[0]
    return found


@pytest.fixture(scope="module")
def object_schema(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


@pytest.fixture(scope="module")
def go_validator(
    object_schema: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[helm.Chart]:
    """A throwaway chart whose values schema is the CRD's schema: Helm validates values with
    a Go JSON-schema library that compiles `pattern` with Go's regexp (RE2), like the API
    server does, so this proves the patterns compile and behave there."""
    probe = tmp_path_factory.mktemp("crd-probe") / "probe"
    (probe / "templates").mkdir(parents=True)
    (probe / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.0.0\n")
    (probe / "values.schema.json").write_text(
        json.dumps({"$schema": "http://json-schema.org/draft-07/schema#", **object_schema})
    )
    with helm.Chart.load(probe) as loaded:
        yield loaded


def with_spec(**changes: Any) -> dict[str, Any]:
    policy: dict[str, Any] = json.loads(json.dumps(SEED_POLICY))
    policy["spec"].update(changes)
    return policy


# --- chart metadata and lint ---------------------------------------------------------------


def test_chart_metadata(chart: helm.Chart) -> None:
    meta = chart.metadata
    assert meta["name"] == "extension-server"
    assert meta["apiVersion"] == "v2"
    assert meta["version"] == "0.1.0"
    assert meta["appVersion"] == "0.1.0"


@pytest.mark.parametrize(
    "values",
    [None, {"unprotectedListeners": "passthrough"}, {"rbac": {"grantEnvoyGateway": False}}],
    ids=["defaults", "passthrough", "no-rbac"],
)
def test_lint_has_no_errors(values: dict[str, Any] | None) -> None:
    assert lint_errors(values) == []
    assert lint_errors(values, strict=True, kube_version="v1.30.0") == []


# --- Service -------------------------------------------------------------------------------


def test_service_is_named_extension_server_on_5005(chart: helm.Chart) -> None:
    objs = objects(chart)
    svc = one(objs, "Service")
    assert svc["metadata"]["name"] == "extension-server"
    assert svc["metadata"]["namespace"] == NAMESPACE
    (port,) = svc["spec"]["ports"]
    assert port["port"] == 5005
    assert port["targetPort"] == "grpc"
    assert port["appProtocol"] == "grpc"
    pod_labels = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()


def test_service_name_survives_another_release_name(chart: helm.Chart) -> None:
    rendered = chart.render(None, name="other", namespace="ns")
    svc = next(
        d for d in yaml.safe_load_all(rendered["extension-server/templates/service.yaml"]) if d
    )
    assert svc["metadata"]["name"] == "extension-server"


# --- Deployment ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["deny", "passthrough"])
def test_deployment_args_and_env(chart: helm.Chart, mode: str) -> None:
    values = None if mode == "deny" else {"unprotectedListeners": mode}
    c = container(objects(chart, values))
    assert c["image"] == "extension-server:latest"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["args"] == ["serve"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env == {
        "EXTENSION_SERVER_LOG_LEVEL": "info",
        "EXTENSION_SERVER_PORT": "5005",
        "EXTENSION_SERVER_UNPROTECTED_LISTENERS": mode,
    }
    assert c["ports"] == [{"name": "grpc", "containerPort": 5005, "protocol": "TCP"}]


def test_deployment_values_flow_through(chart: helm.Chart) -> None:
    c = container(
        objects(
            chart, {"image": {"repository": "reg.example/es", "tag": "v1"}, "logLevel": "debug"}
        )
    )
    assert c["image"] == "reg.example/es:v1"
    assert {e["name"]: e["value"] for e in c["env"]}["EXTENSION_SERVER_LOG_LEVEL"] == "debug"


def test_probes_use_native_grpc(chart: helm.Chart) -> None:
    c = container(objects(chart))
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == 5005


def test_security_context_is_hardened(chart: helm.Chart) -> None:
    objs = objects(chart)
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    sc = container(objs)["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert container(objs)["resources"]["requests"]


def test_service_account_is_used(chart: helm.Chart) -> None:
    objs = objects(chart)
    sa = one(objs, "ServiceAccount")
    assert (
        one(objs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
        == (sa["metadata"]["name"])
    )


# --- RBAC ----------------------------------------------------------------------------------


def test_rbac_grants_envoy_gateway_by_default(chart: helm.Chart) -> None:
    objs = objects(chart)
    role = one(objs, "ClusterRole")
    assert role["metadata"]["name"] == "listener-context-example-viewer"
    assert role["rules"] == [
        {
            "apiGroups": ["example.extensions.io"],
            "resources": ["listenercontextexamples"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    binding = one(objs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "listener-context-example-viewer",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "envoy-gateway", "namespace": "envoy-gateway-system"}
    ]


def test_rbac_follows_envoy_gateway_namespace(chart: helm.Chart) -> None:
    binding = one(objects(chart, {"envoyGateway": {"namespace": "eg"}}), "ClusterRoleBinding")
    assert binding["subjects"][0]["namespace"] == "eg"


def test_rbac_switch_off(chart: helm.Chart) -> None:
    kinds = {o["kind"] for o in objects(chart, {"rbac": {"grantEnvoyGateway": False}})}
    assert kinds == {"Deployment", "Service", "ServiceAccount"}


# --- NOTES.txt -----------------------------------------------------------------------------


def test_notes_carry_the_extension_manager_fragment(chart: helm.Chart) -> None:
    notes = render(chart)["extension-server/templates/NOTES.txt"]
    heredoc = re.search(r"cat <<EOF \| kubectl apply -f -\n(.*?)\n\s*EOF\n", notes, re.S)
    assert heredoc, notes
    configmap = yaml.safe_load(heredoc.group(1))
    assert configmap["metadata"] == {"name": "envoy-gateway-config", "namespace": NAMESPACE}
    eg = yaml.safe_load(configmap["data"]["envoy-gateway.yaml"])
    manager = eg["extensionManager"]
    assert manager["policyResources"] == [
        {"group": "example.extensions.io", "version": "v1alpha1", "kind": "ListenerContextExample"}
    ]
    assert manager["hooks"] == {"xdsTranslator": {"post": ["HTTPListener"]}}
    assert manager["service"] == {
        "fqdn": {
            "hostname": "extension-server.envoy-gateway-system.svc.cluster.local",
            "port": 5005,
        }
    }


# --- invalid values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        {"unprotectedListeners": "open"},
        {"logLevel": "verbose"},
        {"service": {"port": "5005"}},
        {"rbac": {"grantEnvoyGateway": "yes"}},
        {"image": {"pullPolicy": "Sometimes"}},
        {"unprotectedListener": "deny"},  # typo of a known key
    ],
    ids=["unprotected-open", "loglevel", "port-string", "rbac-string", "pullpolicy", "typo"],
)
def test_invalid_values_are_rejected(chart: helm.Chart, values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(chart.merge_values(values))
    with pytest.raises(helm.HelmError):
        render(chart, values)
    assert lint_errors(values)


def test_unprotected_open_names_the_key(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmValuesError, match="unprotectedListeners"):
        render(chart, {"unprotectedListeners": "open"})


# --- CRD -----------------------------------------------------------------------------------


def test_helm_ships_the_crd(chart: helm.Chart) -> None:
    assert [c["name"] for c in chart.crds] == [
        "crds/listenercontextexamples.example.extensions.io.yaml"
    ]


def test_crd_names_and_version(crd: dict[str, Any]) -> None:
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == "listenercontextexamples.example.extensions.io"
    spec = crd["spec"]
    assert spec["group"] == "example.extensions.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "ListenerContextExample",
        "listKind": "ListenerContextExampleList",
        "plural": "listenercontextexamples",
        "singular": "listenercontextexample",
    }
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1"
    assert version["served"] is True
    assert version["storage"] is True
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert columns["Username"]["jsonPath"] == ".spec.username"
    assert columns["Age"] == {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
    }


def test_crd_spec_schema(object_schema: dict[str, Any]) -> None:
    spec = object_schema["properties"]["spec"]
    props = spec["properties"]
    assert set(props) == {"targetRefs", "username", "password", "forwardUsernameHeader"}
    assert spec["required"] == ["targetRefs", "username", "password"]
    refs = props["targetRefs"]
    assert (refs["type"], refs["minItems"], refs["maxItems"]) == ("array", 1, 16)
    items = refs["items"]["properties"]
    assert set(items) == {"group", "kind", "name", "sectionName"}
    assert items["group"]["default"] == "gateway.networking.k8s.io"
    assert items["kind"]["enum"] == ["Gateway"]
    assert (items["name"]["minLength"], items["name"]["maxLength"]) == (1, 253)
    assert (props["username"]["minLength"], props["username"]["maxLength"]) == (1, 256)
    assert (props["password"]["minLength"], props["password"]["maxLength"]) == (1, 4096)
    assert props["forwardUsernameHeader"]["maxLength"] == 256
    rules = [r["rule"] for r in props["username"]["x-kubernetes-validations"]]
    assert any("endsWith(' ')" in r for r in rules)
    password_doc = props["password"]["description"].lower()
    assert "plain text" in password_doc
    assert "secret store" in password_doc


def test_crd_schema_is_structural(object_schema: dict[str, Any]) -> None:
    """Every node declares a type and uses no keyword a structural schema forbids."""
    forbidden = {"$ref", "definitions", "dependencies", "patternProperties", "id"}

    def walk(node: dict[str, Any], where: str) -> None:
        assert "type" in node, f"{where} has no type"
        assert not forbidden & node.keys(), f"{where} uses {forbidden & node.keys()}"
        assert "description" in node or where.count(".") <= 1, f"{where} has no description"
        for name, child in node.get("properties", {}).items():
            walk(child, f"{where}.{name}")
        if "items" in node:
            walk(node["items"], f"{where}[]")

    walk(object_schema, "$")


def test_seed_policy_passes_go_validation(go_validator: helm.Chart) -> None:
    go_validator.validate_schema(SEED_POLICY)
    go_validator.validate_schema(with_spec(forwardUsernameHeader="X-Example-Ext"))


@pytest.mark.parametrize("username", GOOD_USERNAMES)
def test_go_accepts_username(go_validator: helm.Chart, username: str) -> None:
    go_validator.validate_schema(with_spec(username=username))


@pytest.mark.parametrize("username", [*BAD_USERNAMES, "user\n", "x" * 257])
def test_go_rejects_username(go_validator: helm.Chart, username: str) -> None:
    with pytest.raises(helm.HelmValuesError, match="username"):
        go_validator.validate_schema(with_spec(username=username))


@pytest.mark.parametrize(
    "spec_changes",
    [
        {"forwardUsernameHeader": "X Example"},
        {"forwardUsernameHeader": "X-Example:"},
        {"forwardUsernameHeader": ""},
        {"targetRefs": []},
        {"targetRefs": [{"kind": "Gateway", "name": f"eg{i}"} for i in range(17)]},
        {"targetRefs": [{"kind": "HTTPRoute", "name": "r"}]},
        {"targetRefs": [{"kind": "Gateway", "name": ""}]},
        {"password": ""},
        {"password": "x" * 4097},
    ],
)
def test_go_rejects_bad_spec(go_validator: helm.Chart, spec_changes: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        go_validator.validate_schema(with_spec(**spec_changes))


def test_go_rejects_missing_required(go_validator: helm.Chart) -> None:
    for field in ("targetRefs", "username", "password"):
        policy = with_spec()
        del policy["spec"][field]
        with pytest.raises(helm.HelmValuesError, match=field):
            go_validator.validate_schema(policy)


def test_seed_policy_passes_jsonschema(object_schema: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft7Validator(object_schema)
    assert list(validator.iter_errors(SEED_POLICY)) == []
    for username in GOOD_USERNAMES:
        assert validator.is_valid(with_spec(username=username)), username
    # Python's `$` also matches before a final "\n", so "user\n" is left to the Go checks.
    for username in BAD_USERNAMES:
        assert not validator.is_valid(with_spec(username=username)), repr(username)
    errors = list(validator.iter_errors(with_spec(username="a:b")))
    assert [list(e.path) for e in errors] == [["spec", "username"]]
