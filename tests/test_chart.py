"""The Helm chart under charts/extension-server, rendered and linted offline.

Rendering, linting and values-schema checks go through helm-python-sdk, which wraps Helm's own
Go SDK: no helm binary and no cluster are needed. The CRD's openAPIV3Schema is checked twice:
with Helm's Go JSON-schema validator (Go regexp, the engine family the API server uses for
`pattern`) and, when installed, with Python's jsonschema, whose `pattern` is read with
google-re2 here (RE2 syntax, as Go's: `\\p{Cf}` and friends, which Python's `re` lacks).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celpy  # type: ignore[import-untyped]
import helm_python as helm
import pytest
import yaml

from backends.tenancy import DEFAULT_AWS_TEMPLATE, DEFAULT_VAULT_TEMPLATE, tenancy_problem
from compiler.errors import MalformedPolicyError, PolicyError
from compiler.htpasswd import password_problem, username_problem
from compiler.model import PasswordFrom, PlainCredentials, Policy, PolicyRef, UsersFrom, VaultRef
from compiler.parse import (
    _RESERVED_HEADER_PREFIXES,
    _RESERVED_HEADERS,
    _SPEC_FIELDS,
    parse_object,
)
from tests.support.charts import container, manifests, one, python_validator

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

BAD_USERNAMES = [
    *["a:b", ":", "#user", " user", "user ", "a\tb", "a\x7fb", "user\r", ""],
    # C1 control, Unicode white space at either end, invisible format characters
    *["a\x85b", "a\x9fb", "\u00a0user", "user\u3000", "\u2000user", "user\u2028"],
    *["a\u200bb", "\ufeffuser", "a\u00adb", "a\u202eb", "a\u2066b", "a\U000e0041"],
]
GOOD_USERNAMES = ["user", "a b", "a#b", "user#", "ünïcødé", "x" * 256, "a\u00a0b", "\ue000"]


# --- helpers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> dict[str, str]:
    return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def objects(chart: helm.Chart, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart's templates render (NOTES.txt excluded)."""
    return manifests(render(chart, values))


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
    [
        None,
        {"unprotectedListeners": "passthrough"},
        {"rbac": {"grantEnvoyGateway": False}},
        {"vault": {"addr": "https://vault:8200", "token": {"secretName": "vault-token"}}},
    ],
    ids=["defaults", "passthrough", "no-rbac", "rotation"],
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
    # Every setting the defaults drive (Vault, TLS and the optional AWS ones stay unset).
    assert env == {
        "EXTENSION_SERVER_PORT": "5005",
        "EXTENSION_SERVER_LOG_LEVEL": "info",
        "EXTENSION_SERVER_LOG_FORMAT": "logfmt",
        "EXTENSION_SERVER_LOG_REPEAT_INTERVAL": "5m",
        "EXTENSION_SERVER_UNPROTECTED_LISTENERS": mode,
        "EXTENSION_SERVER_WORKERS": "16",
        "EXTENSION_SERVER_MAX_MESSAGE_SIZE": "4MiB",
        "EXTENSION_SERVER_MAX_USERS_PER_POLICY": "100000",
        "EXTENSION_SERVER_MAX_CONCURRENT_CALLS": "64",
        "EXTENSION_SERVER_CALL_TIMEOUT": "10s",
        "EXTENSION_SERVER_SHUTDOWN_GRACE": "15s",
        "EXTENSION_SERVER_METRICS_PORT": "9090",
        "EXTENSION_SERVER_FORBID_PLAINTEXT": "false",
        "EXTENSION_SERVER_SECRET_CACHE_TTL": "60s",
        "EXTENSION_SERVER_SECRET_MAX_STALE": "15m",
        "EXTENSION_SERVER_BACKEND_TIMEOUT": "2s",
        "EXTENSION_SERVER_VAULT_PATH_TEMPLATE": "secret/data/gateways/{namespace}/",
        "EXTENSION_SERVER_AWS_SECRET_TEMPLATE": "gateways/{namespace}/",
        # No store configured: no rotation watcher (and no RBAC or token for it).
        "EXTENSION_SERVER_ROTATION_POLL_INTERVAL": "0",
        "EXTENSION_SERVER_ROTATION_MAX_POLICIES": "2000",
        "EXTENSION_SERVER_ROTATION_LEASE_NAMESPACE": NAMESPACE,
        "EXTENSION_SERVER_ROTATION_LEASE_NAME": "extension-server-rotation",
        # Events on (auto: on in the pod), and the audit trail on standard output.
        "EXTENSION_SERVER_KUBERNETES_EVENTS": "auto",
        "EXTENSION_SERVER_KUBERNETES_EVENTS_INTERVAL": "5m",
        "EXTENSION_SERVER_AUDIT_LOG": "stdout",
    }
    assert c["ports"] == [
        {"name": "grpc", "containerPort": 5005, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
    ]


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
    (role,) = [o for o in objs if o["metadata"]["name"] == "listener-context-example-viewer"]
    assert role["kind"] == "ClusterRole"
    # Envoy Gateway watches the policies, reads one (get) and replaces its status with
    # Status().Update: update on the status subresource, nothing more.
    assert role["rules"] == [
        {
            "apiGroups": ["example.extensions.io"],
            "resources": ["listenercontextexamples"],
            "verbs": ["get", "list", "watch"],
        },
        {
            "apiGroups": ["example.extensions.io"],
            "resources": ["listenercontextexamples/status"],
            "verbs": ["update"],
        },
    ]
    binding = envoy_gateway_binding(objs)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "listener-context-example-viewer",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "envoy-gateway", "namespace": "envoy-gateway-system"}
    ]


def test_rbac_follows_envoy_gateway_namespace(chart: helm.Chart) -> None:
    binding = envoy_gateway_binding(objects(chart, {"envoyGateway": {"namespace": "eg"}}))
    assert binding["subjects"][0]["namespace"] == "eg"


def envoy_gateway_binding(objs: list[dict[str, Any]]) -> dict[str, Any]:
    """The binding of Envoy Gateway's grant (the server's own, for Events, is another)."""
    (binding,) = [o for o in objs if o["metadata"]["name"] == "envoy-gateway-listener-context"]
    assert binding["kind"] == "ClusterRoleBinding"
    return binding


def test_rbac_switch_off(chart: helm.Chart) -> None:
    objs = objects(chart, {"rbac": {"grantEnvoyGateway": False}})
    assert {o["kind"] for o in objs if not o["metadata"]["name"].endswith("-events")} == {
        "Deployment", "Service", "ServiceAccount", "NetworkPolicy"
    }  # fmt: skip


# --- NOTES.txt -----------------------------------------------------------------------------


def test_notes_carry_the_extension_manager_values(chart: helm.Chart) -> None:
    """The notes give Envoy Gateway's chart values, not a ConfigMap to apply by hand
    (tests/test_gateway_helm.py renders Envoy Gateway's chart with them)."""
    notes = render(chart)["extension-server/templates/NOTES.txt"]
    heredoc = re.search(r"cat > envoy-gateway-values.yaml <<'EOF'\n(.*?)\n\s*EOF\n", notes, re.S)
    assert heredoc, notes
    manager = yaml.safe_load(heredoc.group(1))["config"]["envoyGateway"]["extensionManager"]
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
    assert manager["failOpen"] is False
    assert "kind: ConfigMap" not in notes


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
    assert list(columns) == ["Username", "Accepted", "CredentialsRevision", "Age"]
    assert columns["Username"]["jsonPath"] == ".spec.username"
    # kubectl get: Envoy Gateway's Accepted condition (one per target), the revision the
    # rotation watcher wrote, the age.
    assert columns["Accepted"]["jsonPath"] == (
        '.status.ancestors[*].conditions[?(@.type=="Accepted")].status'
    )
    assert columns["CredentialsRevision"]["jsonPath"] == ".spec.credentialsRevision"
    assert columns["Age"] == {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
    }
    # Envoy Gateway writes status with Status().Update: the status subresource.
    assert version["subresources"] == {"status": {}}


# The status Envoy Gateway writes into an extension policy (its status updater for
# extensionManager.policyResources, internal/provider/kubernetes/status.go): Gateway API's
# PolicyStatus, one ancestor per target Gateway (or listener).
EG_STATUS: dict[str, Any] = {
    "ancestors": [
        {
            "ancestorRef": {
                "group": "gateway.networking.k8s.io",
                "kind": "Gateway",
                "name": "eg",
                "namespace": "default",
                "sectionName": "http",
            },
            "controllerName": "gateway.envoyproxy.io/gatewayclass-controller",
            "conditions": [
                {
                    "type": "Accepted",
                    "status": "True",
                    "reason": "Accepted",
                    "message": "Policy has been accepted.",
                    "observedGeneration": 3,
                    "lastTransitionTime": "2026-11-27T08:59:25Z",
                }
            ],
        },
        {
            "ancestorRef": {
                "group": "gateway.networking.k8s.io",
                "kind": "Gateway",
                "name": "other",
                "namespace": "default",
                "port": 8443,
            },
            "controllerName": "gateway.envoyproxy.io/gatewayclass-controller",
            "conditions": [
                {
                    "type": "Accepted",
                    "status": "False",
                    "reason": "TargetNotFound",
                    "message": "Gateway default/other not found.",
                    "lastTransitionTime": "2026-11-27T08:59:25Z",
                },
                {
                    "type": "Aggregated",
                    "status": "True",
                    "reason": "Aggregated",
                    "message": "",
                    "lastTransitionTime": "2026-11-27T08:59:25Z",
                },
            ],
        },
    ]
}


def undeclared(value: Any, schema: dict[str, Any], where: str = "status") -> list[str]:
    """Fields of `value` the schema does not declare: the API server prunes them."""
    if isinstance(value, dict):
        props = schema.get("properties", {})
        return [f"{where}.{k}" for k in value if k not in props] + [
            miss for k, v in value.items() if k in props for miss in undeclared(v, props[k])
        ]
    if isinstance(value, list):
        return [miss for v in value for miss in undeclared(v, schema["items"], where)]
    return []


def test_crd_keeps_the_status_envoy_gateway_writes(
    go_validator: helm.Chart, object_schema: dict[str, Any]
) -> None:
    """A policy carrying the status Envoy Gateway writes passes the schema, none of it is
    pruned, and the CEL rules and the server's parser still take the policy."""
    policy = {**with_spec(), "status": EG_STATUS}
    go_validator.validate_schema(policy)
    assert list(python_validator(object_schema).iter_errors(policy)) == []
    assert undeclared(EG_STATUS, object_schema["properties"]["status"]) == []
    assert api_server_cel(object_schema, policy) == []
    assert isinstance(parse_object(policy, PolicyRef("<test>", "<test>")), Policy)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda st: st["ancestors"][0]["conditions"][0].update(status="yes"), "status"),
        (lambda st: st["ancestors"][0].pop("controllerName"), "controllerName"),
        (lambda st: st["ancestors"][0]["ancestorRef"].update(port=0), "port"),
        (lambda st: st["ancestors"].extend([st["ancestors"][0]] * 15), "ancestors"),
    ],
    ids=["condition-status", "no-controller", "port", "17-ancestors"],
)
def test_crd_status_is_gateway_apis_policy_status(
    go_validator: helm.Chart, change: Any, where: str
) -> None:
    status = json.loads(json.dumps(EG_STATUS))
    change(status)
    with pytest.raises(helm.HelmValuesError, match=where):
        go_validator.validate_schema({**with_spec(), "status": status})


def test_crd_spec_schema(object_schema: dict[str, Any]) -> None:
    spec = object_schema["properties"]["spec"]
    props = spec["properties"]
    assert set(props) == _SPEC_FIELDS  # the parser's fields, no more, no less
    # username and password are no longer required: CEL rules on spec decide (see below).
    assert spec["required"] == ["targetRefs"]
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
    revision = props["credentialsRevision"]
    assert (revision["type"], revision["minLength"], revision["maxLength"]) == ("string", 1, 128)
    revision_doc = " ".join(revision["description"].split())
    for words in ("rotation watcher", "Envoy Gateway translate again", "Do not set it", "ignore"):
        assert words in revision_doc, words


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
        {"password": "p@ss\x00w0rd"},
        {"password": "p@ss\tw0rd"},
        {"password": "p@ssw0rd\n"},
        {"password": "p@ss\x7fw0rd"},
        {"password": "p@ss\x9fw0rd"},
    ],
)
def test_go_rejects_bad_spec(go_validator: helm.Chart, spec_changes: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        go_validator.validate_schema(with_spec(**spec_changes))


def test_go_rejects_missing_required(go_validator: helm.Chart) -> None:
    # username/password: required by CEL rules now (test_cel_rejects_policy).
    for field in ("targetRefs",):
        policy = with_spec()
        del policy["spec"][field]
        with pytest.raises(helm.HelmValuesError, match=field):
            go_validator.validate_schema(policy)


def test_seed_policy_passes_jsonschema(object_schema: dict[str, Any]) -> None:
    validator = python_validator(object_schema)
    assert list(validator.iter_errors(SEED_POLICY)) == []
    for username in GOOD_USERNAMES:
        assert validator.is_valid(with_spec(username=username)), username
    # RE2's `$` is the end of the text (Python's `re` would also match before a final "\n").
    for username in [*BAD_USERNAMES, "user\n"]:
        assert not validator.is_valid(with_spec(username=username)), repr(username)
    errors = list(validator.iter_errors(with_spec(username="a:b")))
    assert [list(e.path) for e in errors] == [["spec", "username"]]


# --- CRD: passwordFrom / usersFrom (secret store references) -------------------------------

REPO_DIR = CHART_DIR.parent.parent
TARGETS = [{"kind": "Gateway", "name": "eg", "group": "gateway.networking.k8s.io"}]
VAULT_V2 = "secret/data/gateways/team-a/alice"


def store_policy(**spec: Any) -> dict[str, Any]:
    """A policy in namespace team-a (whose secrets live under gateways/team-a/)."""
    return {
        "apiVersion": "example.extensions.io/v1alpha1",
        "kind": "ListenerContextExample",
        "metadata": {"name": "p", "namespace": "team-a"},
        "spec": {"targetRefs": TARGETS, **spec},
    }


# One policy of each form the API takes; each must pass the schema, the CEL rules and the
# server's own parser.
VALID_POLICIES: dict[str, dict[str, Any]] = {
    "password": SEED_POLICY,
    "passwordFrom-vault-kv2": store_policy(
        username="alice", passwordFrom={"vault": {"path": VAULT_V2, "key": "password"}}
    ),
    "passwordFrom-vault-version": store_policy(
        username="alice",
        passwordFrom={"vault": {"path": VAULT_V2, "key": "password", "version": 3}},
    ),
    "passwordFrom-vault-kv1": store_policy(
        username="alice",
        passwordFrom={
            "vault": {"path": "kv/gateways/team-a/alice", "engine": "kv-v1", "key": "password"}
        },
    ),
    "passwordFrom-aws-string": store_policy(
        username="alice", passwordFrom={"awsSecretsManager": {"secretId": "gateways/team-a/a"}}
    ),
    "passwordFrom-aws-json-stage": store_policy(
        username="alice",
        passwordFrom={
            "awsSecretsManager": {
                "secretId": "gateways/team-a/alice",
                "key": "password",
                "versionStage": "AWSPREVIOUS",
            }
        },
    ),
    "passwordFrom-aws-version-id": store_policy(
        username="alice",
        passwordFrom={
            "awsSecretsManager": {
                "secretId": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:gateways/team-a/a-AbCdEf",
                "versionId": "5f3c2b1a-0d4e-4f6a-9b8c-7d6e5f4a3b2c",
            }
        },
    ),
    "usersFrom-vault-map": store_policy(
        usersFrom={"vault": {"path": "secret/data/gateways/team-a/users"}}
    ),
    "usersFrom-vault-htpasswd": store_policy(
        usersFrom={"vault": {"path": "secret/data/gateways/team-a/web", "key": "htpasswd"}}
    ),
    "usersFrom-aws-json": store_policy(
        usersFrom={"awsSecretsManager": {"secretId": "gateways/team-a/users"}}
    ),
}

# Structurally valid policies that only the CEL rules reject: (policy, message fragment).
CEL_REJECTED: dict[str, tuple[dict[str, Any], str]] = {
    "two-sources": (
        store_policy(
            username="alice",
            password="p@ssw0rd",
            passwordFrom={"vault": {"path": VAULT_V2, "key": "password"}},
        ),
        "exactly one of password, passwordFrom and usersFrom",
    ),
    "three-sources": (
        store_policy(
            username="alice",
            password="p@ssw0rd",
            passwordFrom={"vault": {"path": VAULT_V2, "key": "password"}},
            usersFrom={"vault": {"path": VAULT_V2}},
        ),
        "exactly one of password, passwordFrom and usersFrom",
    ),
    "no-source": (
        store_policy(username="alice"),
        "exactly one of password, passwordFrom and usersFrom",
    ),
    "usersFrom-with-username": (
        store_policy(username="alice", usersFrom={"vault": {"path": VAULT_V2}}),
        "username must not be set with usersFrom",
    ),
    "passwordFrom-vault-without-key": (
        store_policy(username="alice", passwordFrom={"vault": {"path": VAULT_V2}}),
        "passwordFrom.vault needs key",
    ),
    "passwordFrom-without-username": (
        store_policy(passwordFrom={"vault": {"path": VAULT_V2, "key": "password"}}),
        "username is required",
    ),
    "password-without-username": (
        store_policy(password="p@ssw0rd"),
        "username is required",
    ),
    "kv-v1-with-version": (
        store_policy(
            usersFrom={"vault": {"path": "kv/gateways/team-a/u", "engine": "kv-v1", "version": 2}}
        ),
        "version is only available with engine kv-v2",
    ),
    "aws-stage-and-id": (
        store_policy(
            usersFrom={
                "awsSecretsManager": {
                    "secretId": "gateways/team-a/users",
                    "versionStage": "AWSCURRENT",
                    "versionId": "5f3c2b1a-0d4e-4f6a-9b8c-7d6e5f4a3b2c",
                }
            }
        ),
        "at most one of versionStage and versionId",
    ),
    "both-stores": (
        store_policy(
            username="alice",
            passwordFrom={
                "vault": {"path": VAULT_V2, "key": "password"},
                "awsSecretsManager": {"secretId": "gateways/team-a/alice"},
            },
        ),
        "exactly one of vault and awsSecretsManager",
    ),
    "no-store": (
        store_policy(usersFrom={}),
        "exactly one of vault and awsSecretsManager",
    ),
    # Headers HTTP, proxies or Envoy give a meaning (the parser's _RESERVED_HEADERS and
    # _RESERVED_HEADER_PREFIXES), in any case.
    "reserved-header": (
        store_policy(username="alice", password="p@ssw0rd", forwardUsernameHeader="Authorization"),
        "forwardUsernameHeader must not be a header that HTTP, proxies or Envoy",
    ),
    "reserved-header-lower-case": (
        store_policy(username="alice", password="p@ssw0rd", forwardUsernameHeader="host"),
        "forwardUsernameHeader must not be a header that HTTP, proxies or Envoy",
    ),
    "reserved-header-mixed-case": (
        store_policy(
            username="alice", password="p@ssw0rd", forwardUsernameHeader="Transfer-ENCODING"
        ),
        "forwardUsernameHeader must not be a header that HTTP, proxies or Envoy",
    ),
    # maxLength counts characters, the server's limits are bytes of UTF-8.
    "username-over-256-bytes": (
        store_policy(username="é" * 129, password="p@ssw0rd"),
        "username must be at most 256 bytes",
    ),
    "password-over-4096-bytes": (
        store_policy(username="alice", password="é" * 2049),
        "password must be at most 4096 bytes",
    ),
}

# Policies the structural schema itself rejects.
SCHEMA_REJECTED: dict[str, dict[str, Any]] = {
    "engine-unknown": store_policy(usersFrom={"vault": {"path": VAULT_V2, "engine": "kv-v3"}}),
    "version-zero": store_policy(usersFrom={"vault": {"path": VAULT_V2, "version": 0}}),
    "version-string": store_policy(usersFrom={"vault": {"path": VAULT_V2, "version": "3"}}),
    "vault-without-path": store_policy(usersFrom={"vault": {"key": "users"}}),
    "vault-empty-key": store_policy(
        username="alice", passwordFrom={"vault": {"path": VAULT_V2, "key": ""}}
    ),
    "aws-without-secretId": store_policy(usersFrom={"awsSecretsManager": {"key": "users"}}),
    "aws-empty-secretId": store_policy(usersFrom={"awsSecretsManager": {"secretId": ""}}),
    "usersFrom-string": store_policy(usersFrom=VAULT_V2),
    "username-format-character": store_policy(username="a\u200bb", password="p@ssw0rd"),
    "username-trailing-no-break-space": store_policy(username="alice\u00a0", password="p"),
    "password-newline": store_policy(username="alice", password="p@ss\nw0rd"),
    "password-c1-control": store_policy(username="alice", password="p@ss\x85w0rd"),
}


def server_problem(policy: dict[str, Any]) -> str | None:
    """Why the server leaves `policy` out, or None: its parser, then the checks the user table
    makes (compiler/users.py) on the user name and password, as they also apply to names read
    from secret stores."""
    try:
        parsed = parse_object(policy, PolicyRef("<test>", "<test>"))
    except PolicyError as error:
        return str(error)
    assert isinstance(parsed, Policy)
    credentials = parsed.credentials
    problem = None
    if isinstance(credentials, PlainCredentials | PasswordFrom):
        problem = username_problem(credentials.username)
    if problem is None and isinstance(credentials, PlainCredentials):
        problem = password_problem(credentials.password)
    return problem


def spec_schema(object_schema: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = object_schema["properties"]["spec"]
    return found


def rules(node: dict[str, Any]) -> list[str]:
    return [" ".join(r["rule"].split()) for r in node.get("x-kubernetes-validations", [])]


def with_defaults(schema: dict[str, Any], value: Any) -> Any:
    """`value` with the schema's defaults filled in, as the API server does before CEL runs."""
    if isinstance(value, dict) and "properties" in schema:
        out = dict(value)
        for name, child in schema["properties"].items():
            if name not in out and "default" in child:
                out[name] = child["default"]
            if name in out:
                out[name] = with_defaults(child, out[name])
        return out
    if isinstance(value, list) and "items" in schema:
        return [with_defaults(schema["items"], item) for item in value]
    return value


def cel_failures(schema: dict[str, Any], value: Any, where: str = "$") -> list[str]:
    """Messages of every x-kubernetes-validations rule that `value` fails, evaluated with
    cel-python (`celpy`) at each node of the schema, as the API server evaluates them."""
    failures: list[str] = []
    for rule in schema.get("x-kubernetes-validations", []):
        env = celpy.Environment()
        program = env.program(env.compile(rule["rule"]))
        try:
            result = program.evaluate({"self": celpy.json_to_cel(value)})
        except celpy.CELEvalError as error:  # an error fails validation, as in Kubernetes
            result = error
        if isinstance(result, celpy.CELEvalError) or not bool(result):
            failures.append(f"{where}: {rule['message']}")
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name in value:
                failures += cel_failures(child, value[name], f"{where}.{name}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            failures += cel_failures(schema["items"], item, f"{where}[{i}]")
    return failures


def api_server_cel(object_schema: dict[str, Any], policy: dict[str, Any]) -> list[str]:
    return cel_failures(object_schema, with_defaults(object_schema, policy))


def test_crd_store_reference_schema(object_schema: dict[str, Any]) -> None:
    props = spec_schema(object_schema)["properties"]
    for source in ("passwordFrom", "usersFrom"):
        ref = props[source]
        assert ref["type"] == "object"
        assert set(ref["properties"]) == {"vault", "awsSecretsManager"}
        vault = ref["properties"]["vault"]
        assert vault["required"] == ["path"]
        assert set(vault["properties"]) == {"path", "engine", "key", "version"}
        assert vault["properties"]["engine"]["enum"] == ["kv-v2", "kv-v1"]
        assert vault["properties"]["engine"]["default"] == "kv-v2"
        assert vault["properties"]["version"]["type"] == "integer"
        assert vault["properties"]["version"]["minimum"] == 1
        aws = ref["properties"]["awsSecretsManager"]
        assert aws["required"] == ["secretId"]
        assert set(aws["properties"]) == {"secretId", "key", "versionStage", "versionId"}
        for node in (ref, vault, aws, *vault["properties"].values(), *aws["properties"].values()):
            assert node.get("description"), node
    assert "passwordFrom" in props["password"]["description"]


def test_crd_cel_rules_are_present(object_schema: dict[str, Any]) -> None:
    spec = spec_schema(object_schema)
    spec_rules = rules(spec)
    assert (
        "(has(self.password) ? 1 : 0) + (has(self.passwordFrom) ? 1 : 0)"
        " + (has(self.usersFrom) ? 1 : 0) == 1"
    ) in spec_rules
    assert "!(has(self.password) || has(self.passwordFrom)) || has(self.username)" in spec_rules
    assert "!has(self.usersFrom) || !has(self.username)" in spec_rules
    one_store = "(has(self.vault) ? 1 : 0) + (has(self.awsSecretsManager) ? 1 : 0) == 1"
    no_v1_version = "!(has(self.version) && self.engine == 'kv-v1')"
    stage_xor_id = "!(has(self.versionStage) && has(self.versionId))"
    props = spec["properties"]
    for source in ("passwordFrom", "usersFrom"):
        ref = props[source]
        assert one_store in rules(ref)
        assert no_v1_version in rules(ref["properties"]["vault"])
        assert stage_xor_id in rules(ref["properties"]["awsSecretsManager"])
    assert "has(self.key)" in rules(props["passwordFrom"]["properties"]["vault"])
    assert "has(self.key)" not in rules(props["usersFrom"]["properties"]["vault"])
    # The rules that were there before stay.
    assert any("endsWith(' ')" in r for r in rules(props["username"]))
    assert "!self.contains(':')" in rules(props["username"])


@pytest.mark.parametrize("name", list(VALID_POLICIES))
def test_go_accepts_each_credential_form(go_validator: helm.Chart, name: str) -> None:
    go_validator.validate_schema(VALID_POLICIES[name])


@pytest.mark.parametrize("name", list(SCHEMA_REJECTED))
def test_go_rejects_bad_store_reference(go_validator: helm.Chart, name: str) -> None:
    with pytest.raises(helm.HelmValuesError):
        go_validator.validate_schema(SCHEMA_REJECTED[name])


def test_jsonschema_on_store_references(object_schema: dict[str, Any]) -> None:
    validator = python_validator(object_schema)
    for name, policy in VALID_POLICIES.items():
        assert list(validator.iter_errors(policy)) == [], name
    for name, policy in SCHEMA_REJECTED.items():
        assert not validator.is_valid(policy), name
    # These are structurally fine: only the CEL rules (below) reject them.
    for name, (policy, _) in CEL_REJECTED.items():
        assert list(validator.iter_errors(policy)) == [], name


@pytest.mark.parametrize("name", list(VALID_POLICIES))
def test_cel_accepts_each_credential_form(object_schema: dict[str, Any], name: str) -> None:
    assert api_server_cel(object_schema, VALID_POLICIES[name]) == []


@pytest.mark.parametrize("name", list(CEL_REJECTED))
def test_cel_rejects_policy(object_schema: dict[str, Any], name: str) -> None:
    policy, message = CEL_REJECTED[name]
    failures = api_server_cel(object_schema, policy)
    assert failures, name
    assert any(message in failure for failure in failures), failures


# What the rotation watcher writes: 16 hex digits of a SHA-256 (server/rotation.py).
REVISION = "3f2a9c0d1b7e4a65"


@pytest.mark.parametrize("name", list(VALID_POLICIES))
def test_credentials_revision_passes_every_check(
    go_validator: helm.Chart, object_schema: dict[str, Any], name: str
) -> None:
    """A policy the watcher has patched still passes the schema, the CEL rules and the
    server's parser; the CEL rules do not see the field."""
    policy = json.loads(json.dumps(VALID_POLICIES[name]))
    policy["spec"]["credentialsRevision"] = REVISION
    go_validator.validate_schema(policy)
    assert api_server_cel(object_schema, policy) == []
    parsed = parse_object(policy, PolicyRef("<test>", "<test>"))
    assert isinstance(parsed, Policy)
    assert parsed.credentials_revision == REVISION


def test_credentials_revision_does_not_relax_the_cel_rules(object_schema: dict[str, Any]) -> None:
    for name, (policy, message) in CEL_REJECTED.items():
        patched = json.loads(json.dumps(policy))
        patched["spec"]["credentialsRevision"] = REVISION
        assert any(message in f for f in api_server_cel(object_schema, patched)), name


@pytest.mark.parametrize("revision", ["", "x" * 129, 7])
def test_credentials_revision_bounds(
    go_validator: helm.Chart, object_schema: dict[str, Any], revision: Any
) -> None:
    policy = with_spec(credentialsRevision=revision)
    with pytest.raises(helm.HelmValuesError, match="credentialsRevision"):
        go_validator.validate_schema(policy)
    assert not python_validator(object_schema).is_valid(policy)
    if len(str(revision)) <= 128:  # the parser checks the type, the CRD also the length
        with pytest.raises(MalformedPolicyError):
            parse_object(policy, PolicyRef("<test>", "<test>"))
    go_validator.validate_schema(with_spec(credentialsRevision="x" * 128))


def test_cel_keeps_the_username_rules(object_schema: dict[str, Any]) -> None:
    for username in GOOD_USERNAMES:
        assert api_server_cel(object_schema, with_spec(username=username)) == [], username
    for username in ("a:b", " user", "user "):
        assert api_server_cel(object_schema, with_spec(username=username)), username


def test_server_parser_agrees_with_the_crd() -> None:
    """What the CRD accepts the server takes; what it rejects the server rejects too (in its
    parser, or in the checks of the user table)."""
    where = PolicyRef("<test>", "<test>")
    for name, policy in VALID_POLICIES.items():
        assert isinstance(parse_object(policy, where), Policy), name
        assert server_problem(policy) is None, name
    rejected = {**{k: v for k, (v, _) in CEL_REJECTED.items()}, **SCHEMA_REJECTED}
    for name, policy in rejected.items():
        assert server_problem(policy) is not None, f"the server accepted {name}"


RESERVED_EXAMPLES = sorted(_RESERVED_HEADERS) + [
    prefix + suffix for prefix in _RESERVED_HEADER_PREFIXES for suffix in ("for", "original-path")
]


@pytest.mark.parametrize("header", RESERVED_EXAMPLES)
def test_cel_rejects_every_reserved_header_in_any_case(
    go_validator: helm.Chart, object_schema: dict[str, Any], header: str
) -> None:
    for spelling in (header, header.upper(), header.title()):
        policy = with_spec(forwardUsernameHeader=spelling)
        go_validator.validate_schema(policy)  # a header token: only the CEL rule refuses it
        failures = api_server_cel(object_schema, policy)
        assert any("must not be a header that HTTP, proxies or Envoy" in f for f in failures), (
            spelling
        )
        assert server_problem(policy) is not None, spelling


def test_cel_reserved_headers_are_the_parsers(object_schema: dict[str, Any]) -> None:
    names, prefixes = rules(spec_schema(object_schema)["properties"]["forwardUsernameHeader"])
    listed = re.search(r"\(\?i\)\^\(([^)]*)\)\$", names)
    assert listed, names
    assert set(listed.group(1).split("|")) == _RESERVED_HEADERS
    starts = re.search(r"\(\?i\)\^\(([^)]*)\)'", prefixes)
    assert starts, prefixes
    assert tuple(starts.group(1).split("|")) == _RESERVED_HEADER_PREFIXES
    for header in (
        "X-Example-Ext",
        "X-Host",
        "Hosts",
        "tex",
        "X-Authorization",
        "Upgrade-X",
        "X-Remote-User",
        "X-Auth-Request-User",
        "X-Forwarded",  # the family is X-Forwarded-*, with the dash
        "X-Envoyish",
    ):
        policy = with_spec(forwardUsernameHeader=header)
        assert api_server_cel(object_schema, policy) == [], header
        assert server_problem(policy) is None, header


# --- CRD and server on one list of user names ----------------------------------------------

# The checks only the server makes: the API server has no Unicode normalization and RE2 no
# class for unassigned code points. The username description says so; the server leaves
# such a policy out with an error naming it (the words below are from that error).
SERVER_ONLY: dict[str, str] = {
    "e\u0301": "Normalization Form C",  # e + COMBINING ACUTE ACCENT: NFC is "é"
    "\u212b": "Normalization Form C",  # ANGSTROM SIGN: NFC is "Å"
    "a\u0378b": "unassigned",
    "\U000e0080": "unassigned",
    "\ufdd0": "unassigned",  # noncharacters are never assigned
    "\uffff": "unassigned",
}

# One list for both. Lone surrogates are left out: they cannot reach either, as JSON
# decoding (the API server's, Envoy Gateway's) turns each into U+FFFD.
USERNAME_CASES: list[str] = [
    *GOOD_USERNAMES,
    *BAD_USERNAMES,
    *["user\n", "x" * 257, "#", "# user", "a#", "a:", "名前", "emoji \U0001f642"],
    # bytes, not characters: 256 bytes pass, 258 or 260 do not
    *["é" * 128, "é" * 129, "\U0001f642" * 64, "\U0001f642" * 65],
    # controls, C0 and C1, anywhere
    *["\x00", "a\x00b", "\x1f", "a\x80b", "\tuser", "user\x0b", "\x1cuser", "user\x85"],
    # Unicode white space: at either end refused, inside allowed
    *["\u1680user", "user\u205f", "\u2029user", "\u202fuser", "user\u200a", "\u3000"],
    *["a\u3000b", "a\u202fb", "a\u2002b"],
    # format characters (Cf): joiners, word joiner, marks, tags, annotation anchors
    *["a\u200cb", "a\u200db", "a\u2060b", "a\u061cb", "a\u180eb", "a\U0001d173b"],
    *["\U000e0001", "a\ufff9b", "\u200e", "user\u2069"],
    # private use (Co): the server takes it, so the CRD must too
    *["\ue000", "\U000f0000", "a\U00100000b"],
    *SERVER_ONLY,
]


def crd_accepts(go_validator: helm.Chart, object_schema: dict[str, Any], username: str) -> bool:
    """What the API server would say: the schema (Go regexp, lengths), then the CEL rules."""
    policy = with_spec(username=username)
    try:
        go_validator.validate_schema(policy)
    except helm.HelmValuesError:
        return False
    return api_server_cel(object_schema, policy) == []


def test_crd_admits_only_user_names_the_server_admits(
    go_validator: helm.Chart, object_schema: dict[str, Any]
) -> None:
    """Every name the CRD accepts the server accepts, but for the checks only the server can
    make (SERVER_ONLY); and the CRD refuses no name the server accepts."""
    disagreements = []
    for username in dict.fromkeys(USERNAME_CASES):
        crd = crd_accepts(go_validator, object_schema, username)
        problem = username_problem(username)
        if username in SERVER_ONLY:
            agree = crd and problem is not None and SERVER_ONLY[username] in problem
        else:
            agree = crd == (problem is None)
        if not agree:
            disagreements.append((username, f"CRD accepts: {crd}", f"server: {problem}"))
    assert disagreements == []


def test_go_and_re2_read_the_username_pattern_alike(
    go_validator: helm.Chart, object_schema: dict[str, Any]
) -> None:
    """The Python checks (google-re2) and Helm's Go validator agree on every name of the list,
    so what the CEL and jsonschema tests prove holds for the API server's Go regexp too."""
    python = python_validator(object_schema)
    for username in dict.fromkeys(USERNAME_CASES):
        policy = with_spec(username=username)
        try:
            go_validator.validate_schema(policy)
            go = True
        except helm.HelmValuesError:
            go = False
        assert python.is_valid(policy) == go, repr(username)


def test_crd_says_what_only_the_server_checks(object_schema: dict[str, Any]) -> None:
    description = " ".join(
        spec_schema(object_schema)["properties"]["username"]["description"].split()
    )
    for words in ("Normalization Form C", "unassigned", "256 bytes", "format characters"):
        assert words in description, words
    assert {reason for reason in SERVER_ONLY.values()} <= {"Normalization Form C", "unassigned"}


def doc_policies() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted([*(REPO_DIR / "docs").glob("*.md"), REPO_DIR / "README.md"]):
        doc = str(path.relative_to(REPO_DIR))
        text = path.read_text()
        for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", text, re.S)):
            for obj in yaml.safe_load_all(block):
                if isinstance(obj, dict) and obj.get("kind") == "ListenerContextExample":
                    found.append((f"{doc}#{i}", obj))
    for path in sorted((REPO_DIR / "docs" / "examples").glob("policy-*.yaml")):
        found.append((str(path.relative_to(REPO_DIR)), yaml.safe_load(path.read_text())))
    return found


def test_docs_have_every_example() -> None:
    names = [name for name, _ in doc_policies() if name.startswith("docs/backends.md")]
    assert len(names) >= 10


@pytest.mark.parametrize(("name", "policy"), doc_policies(), ids=[n for n, _ in doc_policies()])
def test_doc_example_is_valid(
    go_validator: helm.Chart, object_schema: dict[str, Any], name: str, policy: dict[str, Any]
) -> None:
    """Every policy in the docs passes the CRD, its CEL rules, the parser and the tenancy
    guard (default templates; the KV v1 example with the template the docs give)."""
    go_validator.validate_schema(policy)
    parsed = parse_object(policy, PolicyRef("<doc>", name))
    assert isinstance(parsed, Policy)
    if isinstance(parsed.credentials, PasswordFrom | UsersFrom):
        ref = parsed.credentials.store
        vault_template = DEFAULT_VAULT_TEMPLATE
        if isinstance(ref, VaultRef) and ref.engine == "kv-v1":
            vault_template = "kv/gateways/{namespace}/"
        problem = tenancy_problem(ref, parsed.ref.namespace, vault_template, DEFAULT_AWS_TEMPLATE)
        assert problem is None, problem
    assert api_server_cel(object_schema, policy) == []
