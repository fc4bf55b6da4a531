"""The chart rendered for real configurations, checked three ways, with no cluster.

1. helm lint (helm-python-sdk, Helm's own Go SDK) reports no error for any configuration.
2. Every rendered manifest, and the CRD, validates against the Kubernetes API schemas that
   `kubernetes-validate` ships, for the newest Kubernetes it knows, in strict mode (an
   unknown field fails).
3. The rendered Deployment really starts the server: its container args and environment
   are run as `extension-server <args>`, with every file the pod would mount (Secrets,
   ConfigMaps, projected tokens) written the way the kubelet writes them, and the server
   must answer the gRPC health check (over TLS and mTLS for the TLS configuration), serve
   /metrics, open no connection to Vault or AWS while it starts, and exit 0 on SIGTERM.
   Where the chart turns the rotation watcher on, the server starts it when it finds a
   Kubernetes configuration (an API stand-in here, which must see no request) and logs
   rotation.disabled when it finds none; either way it starts and serves.

The rotation watcher's RBAC is checked against the requests the server's own Kubernetes
code (server/kube.py) sends to the API stand-in of tests/support/kube.py: each request is
allowed, and each verb the chart grants is used.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import helm_python as helm
import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from backends.registry import Templates, watched_policy
from backends.tenancy import DEFAULT_AWS_TEMPLATE, DEFAULT_VAULT_TEMPLATE
from server.cli import serve_command
from server.demo.envoy import free_port
from server.kube import LeaseElector, PolicyClient
from server.settings import ENV_PREFIX, Duration
from tests.support.certs import Authority, Pem
from tests.support.charts import (
    CHART_DIR,
    KUBE_API_DIR,
    KUBE_API_SOURCES,
    NAMESPACE,
    RELEASE,
    allowing,
    assert_each_allowed_and_each_grant_used,
    attributes,
    container,
    deep_merge,
    env_of,
    grants,
    manifests,
    named,
    one,
    pod_spec,
    render_objects,
)
from tests.support.commands import EXTENSION_SERVER
from tests.support.kube import KubeStandIn
from tests.support.secrets import remember

CRD_FILE = CHART_DIR / "crds" / "listenercontextexamples.example.extensions.io.yaml"
# The newest Kubernetes whose schemas kubernetes-validate ships.
KUBERNETES = kubernetes_validate.utils.latest_version()
KUBE_VERSION = f"v{KUBERNETES}"

IRSA_ROLE = "arn:aws:iam::123456789012:role/extension-server"
ROTATION_LEASE = "eg-credentials-rotation"
VAULT_TOKEN = "hvs.chart-test-vault-token"
APPROLE_SECRET_ID = "chart-test-approle-secret-id"

# Prometheus in namespace monitoring: one NetworkPolicyPeer (both selectors: AND).
PROMETHEUS_PEER: dict[str, Any] = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}
EXTRA_INGRESS: dict[str, Any] = {
    "from": [{"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.99.0/24"]}}],
    "ports": [{"port": "grpc", "protocol": "TCP"}],
}

# The configurations the tests render: the defaults and one per feature.
CONFIGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "vault-kubernetes": {
        "vault": {
            "addr": "https://vault.vault.svc:8200",
            "namespace": "team-gw",
            "auth": "kubernetes",
            "role": "extension-server",
            "authMount": "kubernetes-eg",
            "caCert": {"configMapName": "vault-ca"},
            "kubernetes": {"audience": "vault"},
        },
        "forbidPlaintext": True,
        "secretCache": {"ttl": "30s", "maxStale": "1h"},
        "backendTimeout": "1500ms",
        "logLevel": "debug",
        "logFormat": "json",
    },
    "aws-irsa": {
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": IRSA_ROLE}},
        "aws": {
            "region": "eu-west-1",
            "endpointUrl": "https://vpce-0abc.secretsmanager.eu-west-1.vpce.amazonaws.com",
            "roleArn": "arn:aws:iam::210987654321:role/gateway-secrets-reader",
            "secretTemplate": "eg/{namespace}/",
        },
        "forbidPlaintext": True,
        "unprotectedListeners": "passthrough",
    },
    "tls-mtls": {
        "tls": {
            "enabled": True,
            "secretName": "extension-server-tls",
            "clientCA": {"secretName": "envoy-gateway-client-ca"},
        },
    },
    # TLS without a client CA, and another port for the probes' plaintext health port.
    "tls": {
        "tls": {"enabled": True, "secretName": "extension-server-tls"},
        "healthPort": 8086,
    },
    "replicas-3": {
        "replicaCount": 3,
        "metrics": {"port": 9102},
        "workers": 32,
        "shutdownGrace": "20s",
        "terminationGracePeriodSeconds": 40,
    },
    "vault-token": {
        "vault": {"addr": "https://vault.example:8200", "token": {"secretName": "vault-token"}},
        "metrics": {"enabled": False},
    },
    "vault-approle": {
        "vault": {
            "addr": "https://vault.example:8200",
            "auth": "approle",
            "caCert": {"secretName": "vault-ca", "key": "bundle.pem"},
            "pathTemplate": "kv/gateways/{namespace}/",
            "approle": {"roleId": "4f1e-role-id", "secretId": {"secretName": "vault-approle"}},
        },
    },
    # Vault with Kubernetes auth (a second projected token, for Vault) and two replicas that
    # share the Lease.
    "rotation": {
        "vault": {
            "addr": "https://vault.vault.svc:8200",
            "auth": "kubernetes",
            "role": "extension-server",
        },
        "rotation": {"pollInterval": "45s", "leaseName": ROTATION_LEASE},
        "replicaCount": 2,
    },
    "network-policy": {
        "envoyGateway": {"namespace": "gateway-system"},
        "networkPolicy": {
            "metricsFrom": [PROMETHEUS_PEER],
            "extraIngress": [EXTRA_INGRESS],
        },
    },
    # cert-manager issues the server's certificate (with its CA as ca.crt, which the server
    # requires client certificates to chain to) and Envoy Gateway's client certificate.
    "cert-manager": {
        "tls": {"certManager": {"enabled": True, "issuerRef": {"name": "extension-server-ca"}}},
    },
    "no-network-policy": {"networkPolicy": {"enabled": False}},
}
# Kinds of other projects' CRDs, which kubernetes-validate has no schema for: their
# structure is checked by the tests of the feature that renders them.
CRD_KINDS = {"cert-manager.io/v1": {"Certificate"}, "monitoring.coreos.com/v1": {"PrometheusRule"}}


# --- rendering -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Every Kubernetes object of every configuration (NOTES.txt excluded)."""
    found: dict[str, list[dict[str, Any]]] = {}
    with helm.Chart.load(CHART_DIR) as chart:
        for name, values in CONFIGS.items():
            files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
            found[name] = manifests(files)
    return found


def rotation_on(objs: list[dict[str, Any]]) -> bool:
    """Whether the chart turned the rotation watcher on (a non-zero interval)."""
    return env_of(objs)[ENV_PREFIX + "ROTATION_POLL_INTERVAL"] != "0"


def tls_on(objs: list[dict[str, Any]]) -> bool:
    return ENV_PREFIX + "TLS_CERT_FILE" in env_of(objs)


def flags_of(objs: list[dict[str, Any]]) -> dict[str, str]:
    """The container's `--name value` arguments after `serve`, as {name: value}."""
    command, *rest = container(objs)["args"]
    assert command == "serve"
    assert len(rest) % 2 == 0 and all(r.startswith("--") for r in rest[::2]), rest
    return dict(zip(rest[::2], rest[1::2], strict=True))


# --- 1. helm lint --------------------------------------------------------------------------


@pytest.mark.parametrize("config", list(CONFIGS))
def test_lint_has_no_errors(config: str) -> None:
    values = CONFIGS[config]
    for report in (
        helm.lint(CHART_DIR, values, namespace=NAMESPACE),
        helm.lint(CHART_DIR, values, namespace=NAMESPACE, strict=True, kube_version=KUBE_VERSION),
    ):
        assert report["total_charts_linted"] == 1
        # No error, and no warning either (severity 2).
        problems = report["errors"] + [m for m in report["messages"] if m["severity"] >= 2]
        assert problems == [], config


# --- 2. Kubernetes schemas -----------------------------------------------------------------


def k8s_validate(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def test_every_manifest_is_valid_kubernetes(rendered: dict[str, list[dict[str, Any]]]) -> None:
    counted = 0
    for config, objs in rendered.items():
        for obj in objs:
            if obj["kind"] in CRD_KINDS.get(obj["apiVersion"], ()):
                continue
            where = f"{config}: {obj['kind']}/{obj['metadata']['name']}"
            try:
                k8s_validate(obj)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{where}: {error.message} at {list(error.path)}")
            counted += 1
    crd = yaml.safe_load(CRD_FILE.read_text())
    k8s_validate(crd)
    counted += 1
    # defaults 6 (Deployment, Service, ServiceAccount, ClusterRole, ClusterRoleBinding,
    # NetworkPolicy), each other configuration the same but no-network-policy (5);
    # replicas-3 and rotation a PodDisruptionBudget too; each configuration with a store (so
    # the rotation watcher on) the watcher's ClusterRole, ClusterRoleBinding, Role and
    # RoleBinding; every configuration the ClusterRole and ClusterRoleBinding of Events; the
    # CRD. (cert-manager's two Certificates are not counted here.)
    with_store = {"vault-kubernetes", "aws-irsa", "vault-token", "vault-approle", "rotation"}
    assert {config for config, objs in rendered.items() if rotation_on(objs)} == with_store
    assert counted == 6 * len(CONFIGS) - 1 + 2 + 4 * len(with_store) + 2 * len(CONFIGS) + 1
    print(
        f"\nkubernetes-validate {kubernetes_validate.version.__version__}: {counted} manifests "
        f"valid for Kubernetes {KUBERNETES} (strict), {len(CONFIGS)} configurations + the CRD"
    )


def test_strict_validation_catches_an_unknown_field(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """The check above can fail: a misspelt field in the pod spec is refused."""
    deployment = json.loads(json.dumps(one(rendered["defaults"], "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    with pytest.raises(kubernetes_validate.ValidationError, match="volumeMount"):
        k8s_validate(deployment)
    crd = yaml.safe_load(CRD_FILE.read_text())
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validation"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        k8s_validate(crd)


# --- what each configuration renders -------------------------------------------------------


def test_every_server_setting_is_driven_by_the_chart(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """Every EXTENSION_SERVER_* variable the chart sets is a real setting, and every
    setting has a value but --host (a pod listens on all addresses), --config,
    --unix-socket (for a server inside Envoy Gateway's own pod, which this chart is not),
    and --rotation-watcher (its default, auto, is on in a pod).
    One setting comes as an argument instead, --health-port (with TLS only); it counts by
    its variable's name here, and is never set both ways."""
    settings = {
        str(p.envvar if isinstance(p.envvar, str) else p.envvar[0])
        for p in serve_command.params
        if p.envvar
    }
    used: set[str] = set()
    for objs in rendered.values():
        names = set(env_of(objs))
        flags = {
            ENV_PREFIX + f.removeprefix("--").upper().replace("-", "_") for f in flags_of(objs)
        }
        assert not names & flags, names & flags
        names |= flags
        assert names <= settings, names - settings
        used |= names
    left_alone = ("HOST", "CONFIG", "UNIX_SOCKET", "ROTATION_WATCHER")
    assert settings - used == {ENV_PREFIX + n for n in left_alone}


def test_chart_defaults_are_the_server_defaults(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    env = env_of(rendered["defaults"])
    defaults = {p.name: p.default for p in serve_command.params}
    duration = Duration()
    for variable, option in [
        ("SECRET_CACHE_TTL", "secret_cache_ttl"),
        ("SECRET_MAX_STALE", "secret_max_stale"),
        ("BACKEND_TIMEOUT", "backend_timeout"),
        ("SHUTDOWN_GRACE", "shutdown_grace"),
    ]:
        assert duration.convert(env[ENV_PREFIX + variable], None, None) == duration.convert(
            defaults[option], None, None
        ), variable
    # The rotation watcher: the chart's defaults are the server's, but without a store the
    # chart passes 0 (the server would not start a watcher either).
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())["rotation"]
    assert duration.convert(values["pollInterval"], None, None) == duration.convert(
        defaults["rotation_poll_interval"], None, None
    )
    assert values["leaseName"] == env[ENV_PREFIX + "ROTATION_LEASE_NAME"]
    assert env[ENV_PREFIX + "ROTATION_LEASE_NAME"] == defaults["rotation_lease_name"]
    assert env[ENV_PREFIX + "ROTATION_POLL_INTERVAL"] == "0"
    assert env[ENV_PREFIX + "ROTATION_LEASE_NAMESPACE"] == NAMESPACE
    assert env_of(rendered["vault-token"])[ENV_PREFIX + "ROTATION_POLL_INTERVAL"] == "30s"
    for variable, option in [
        ("LOG_LEVEL", "log_level"),
        ("LOG_FORMAT", "log_format"),
        ("UNPROTECTED_LISTENERS", "unprotected_listeners"),
        ("WORKERS", "workers"),
        ("MAX_CONCURRENT_CALLS", "max_concurrent_calls"),
        ("METRICS_PORT", "metrics_port"),
        ("PORT", "port"),
        ("VAULT_PATH_TEMPLATE", "vault_path_template"),
        ("AWS_SECRET_TEMPLATE", "aws_secret_template"),
    ]:
        assert env[ENV_PREFIX + variable] == str(defaults[option]), variable
    assert env[ENV_PREFIX + "FORBID_PLAINTEXT"] == "false"
    assert not any(name.startswith((ENV_PREFIX + "VAULT_ADDR", ENV_PREFIX + "TLS")) for name in env)


def test_tls_mounts_the_secret_and_switches_probes(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objs = rendered["tls-mtls"]
    c, env = container(objs), env_of(objs)
    assert env[ENV_PREFIX + "TLS_CERT_FILE"] == "/etc/extension-server/tls/tls.crt"
    assert env[ENV_PREFIX + "TLS_KEY_FILE"] == "/etc/extension-server/tls/tls.key"
    assert env[ENV_PREFIX + "TLS_CLIENT_CA_FILE"] == "/etc/extension-server/tls-client-ca/ca.crt"
    volumes = {v["name"]: v for v in pod_spec(objs)["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "extension-server-tls"
    assert {i["key"] for i in volumes["tls"]["secret"]["items"]} == {"tls.crt", "tls.key"}
    assert volumes["tls-client-ca"]["secret"]["secretName"] == "envoy-gateway-client-ca"
    for mount in c["volumeMounts"]:
        assert mount.get("readOnly") or mount["name"] == "tmp", mount
        assert "subPath" not in mount  # a subPath mount never sees a renewed Secret
    # The kubelet's grpc probe cannot speak TLS: with TLS on, both probes are grpc probes on
    # the plaintext health port, which the server opens with --health-port.
    for config, health_port in (("tls-mtls", 5006), ("tls", 8086)):
        c = container(rendered[config])
        assert flags_of(rendered[config]) == {"--health-port": str(health_port)}, config
        assert c["args"] == ["serve", "--health-port", str(health_port)]
        assert {"name": "health", "containerPort": health_port, "protocol": "TCP"} in c["ports"]
        for probe in ("readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"] == {"port": health_port}, (config, probe)
            assert "tcpSocket" not in c[probe] and "exec" not in c[probe]
        assert c["readinessProbe"]["periodSeconds"] == 5
        assert c["livenessProbe"]["initialDelaySeconds"] == 10
        # Envoy Gateway's Service reaches the TLS port only, never the health port.
        (service_port,) = one(rendered[config], "Service")["spec"]["ports"]
        assert service_port["targetPort"] == "grpc"
    # Without TLS the native gRPC probes ask the gRPC port, and no health port is opened.
    for config, objs in rendered.items():
        if tls_on(objs):
            continue
        c = container(objs)
        assert c["args"] == ["serve"], config
        assert "health" not in {p["name"] for p in c["ports"]}, config
        for probe in ("readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"] == {"port": 5005}, (config, probe)
    # The template says why, in a comment next to the probes.
    comments = re.sub(
        r"\s*\n\s*#\s*", " ", (CHART_DIR / "templates" / "deployment.yaml").read_text()
    )
    assert "native grpc probe speaks plaintext gRPC only. It cannot do TLS" in comments


def test_vault_kubernetes_projects_its_own_token(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objs = rendered["vault-kubernetes"]
    spec, env = pod_spec(objs), env_of(objs)
    assert spec["automountServiceAccountToken"] is False
    assert one(objs, "ServiceAccount")["automountServiceAccountToken"] is False
    # Two projected volumes: this one, and the API-server token of the rotation watcher.
    projected = {v["name"]: v for v in spec["volumes"] if "projected" in v}
    assert set(projected) == {"vault-jwt", "kube-api-access"}
    volume = projected["vault-jwt"]
    (source,) = volume["projected"]["sources"]
    assert source["serviceAccountToken"] == {
        "path": "token",
        "expirationSeconds": 3600,
        "audience": "vault",
    }
    mount = next(m for m in container(objs)["volumeMounts"] if m["name"] == volume["name"])
    assert env[ENV_PREFIX + "VAULT_KUBERNETES_JWT_FILE"] == mount["mountPath"] + "/token"
    assert env[ENV_PREFIX + "VAULT_ROLE"] == "extension-server"
    assert env[ENV_PREFIX + "VAULT_AUTH"] == "kubernetes"
    assert env[ENV_PREFIX + "VAULT_AUTH_MOUNT"] == "kubernetes-eg"
    assert env[ENV_PREFIX + "VAULT_NAMESPACE"] == "team-gw"
    # No audience value: the token is for Vault only all the same (audience `vault`, the
    # default). An empty one leaves the key out: the API server's audience.
    for kubernetes, audience in (None, {"audience": "vault"}), ({"audience": ""}, {}):
        with helm.Chart.load(CHART_DIR) as chart:
            values = json.loads(json.dumps(CONFIGS["vault-kubernetes"]))
            del values["vault"]["kubernetes"]
            if kubernetes is not None:
                values["vault"]["kubernetes"] = kubernetes
            text = chart.render(values, name=RELEASE, namespace=NAMESPACE)
        deployment = yaml.safe_load(text["extension-server/templates/deployment.yaml"])
        sources = [
            s
            for v in deployment["spec"]["template"]["spec"]["volumes"]
            if v["name"] == "vault-jwt"
            for s in v["projected"]["sources"]
        ]
        token = {"path": "token", "expirationSeconds": 3600, **audience}
        assert sources == [{"serviceAccountToken": token}], kubernetes


# --- the rotation watcher ------------------------------------------------------------------

ROTATION = f"{RELEASE}-rotation"
VAULT_TOKEN_VALUES: dict[str, Any] = {
    "vault": {"addr": "https://vault.example:8200", "token": {"secretName": "vault-token"}}
}


def rotation_objects(objs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted(
        (o["kind"], o["metadata"]["name"]) for o in objs if o["metadata"]["name"] == ROTATION
    )


def test_rotation_rbac_is_exactly_what_the_watcher_needs(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objs = rendered["rotation"]
    assert rotation_objects(objs) == [
        ("ClusterRole", ROTATION),
        ("ClusterRoleBinding", ROTATION),
        ("Role", ROTATION),
        ("RoleBinding", ROTATION),
    ]
    # Every namespace: list the policies and (merge) patch one's spec.credentialsRevision.
    assert named(objs, "ClusterRole", ROTATION)["rules"] == [
        {
            "apiGroups": ["example.extensions.io"],
            "resources": ["listenercontextexamples"],
            "verbs": ["list", "patch"],
        }
    ]
    # The release namespace: its one Lease. create cannot be limited by resourceNames.
    role = named(objs, "Role", ROTATION)
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [ROTATION_LEASE],
            "verbs": ["get", "update"],
        },
    ]
    service_account = one(objs, "ServiceAccount")["metadata"]
    subject = {
        "kind": "ServiceAccount",
        "name": service_account["name"],
        "namespace": service_account["namespace"],
    }
    assert pod_spec(objs)["serviceAccountName"] == subject["name"]
    for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        binding = named(objs, kind, ROTATION)
        assert binding["subjects"] == [subject]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role_kind,
            "name": ROTATION,
        }
    assert named(objs, "RoleBinding", ROTATION)["metadata"]["namespace"] == NAMESPACE
    env = env_of(objs)
    assert env[ENV_PREFIX + "ROTATION_POLL_INTERVAL"] == "45s"
    assert env[ENV_PREFIX + "ROTATION_LEASE_NAMESPACE"] == NAMESPACE
    assert env[ENV_PREFIX + "ROTATION_LEASE_NAME"] == ROTATION_LEASE
    # Envoy Gateway's own grant is untouched.
    viewer = named(objs, "ClusterRole", "listener-context-example-viewer")
    assert viewer["rules"][0]["verbs"] == ["get", "list", "watch"]


def test_rotation_mounts_the_api_server_token_beside_the_vault_token(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objs = rendered["rotation"]
    spec = pod_spec(objs)
    # automountServiceAccountToken stays off: the chart mounts the same files itself.
    assert spec["automountServiceAccountToken"] is False
    assert one(objs, "ServiceAccount")["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["kube-api-access"]["projected"]["sources"] == KUBE_API_SOURCES
    mounts = {m["name"]: m for m in container(objs)["volumeMounts"]}
    assert mounts["kube-api-access"] == {
        "name": "kube-api-access",
        "mountPath": KUBE_API_DIR,
        "readOnly": True,
    }
    # Vault's token (its own audience and lifetime) is elsewhere: no path inside another.
    assert mounts["vault-jwt"]["mountPath"] == "/var/run/secrets/extension-server/vault"
    paths = [m["mountPath"] for m in mounts.values()]
    for a, b in itertools.permutations(paths, 2):
        assert not (a + "/").startswith(b + "/"), (a, b)
    assert env_of(objs)[ENV_PREFIX + "VAULT_KUBERNETES_JWT_FILE"].startswith(
        "/var/run/secrets/extension-server/vault/"
    )
    # A read-only root filesystem is fine: every mount is a volume, and the runtime creates
    # the mount points (as it does for the automounted token at the same path).
    assert container(objs)["securityContext"]["readOnlyRootFilesystem"] is True
    assert all(m.get("readOnly") for m in mounts.values() if m["name"] != "tmp")


@pytest.mark.parametrize(
    "values",
    [
        VAULT_TOKEN_VALUES,
        {"aws": {"region": "eu-west-1"}},
        {"aws": {"roleArn": "arn:aws:iam::210987654321:role/gateway-secrets-reader"}},
        {"serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": IRSA_ROLE}}},
        {**VAULT_TOKEN_VALUES, "rotation": {"pollInterval": "250ms"}},
    ],
    ids=["vault", "aws-region", "aws-role-arn", "irsa", "250ms"],
)
def test_rotation_runs_with_any_store(values: dict[str, Any]) -> None:
    objs = render_objects(values)
    assert len(rotation_objects(objs)) == 4
    assert "kube-api-access" in {v["name"] for v in pod_spec(objs)["volumes"]}
    interval = values.get("rotation", {}).get("pollInterval", "30s")
    assert env_of(objs)[ENV_PREFIX + "ROTATION_POLL_INTERVAL"] == interval


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"tls": {"enabled": True, "secretName": "extension-server-tls"}},
        {"serviceAccount": {"annotations": {"example.com/owner": "team-gw"}}},
        {**VAULT_TOKEN_VALUES, "rotation": {"pollInterval": "0"}},
        {**VAULT_TOKEN_VALUES, "rotation": {"pollInterval": "0s"}},
        {**VAULT_TOKEN_VALUES, "rotation": {"pollInterval": "0.0m"}},
        {**VAULT_TOKEN_VALUES, "rotation": {"pollInterval": 0}},  # --set rotation.pollInterval=0
    ],
    ids=["no-store", "tls-no-store", "other-annotation", "0", "0s", "0.0m", "integer-0"],
)
def test_rotation_off_renders_nothing_for_it(values: dict[str, Any]) -> None:
    objs = render_objects({**values, "events": {"enabled": False}})  # Events mount the token too
    assert rotation_objects(objs) == []
    assert not [o for o in objs if o["kind"] in ("Role", "RoleBinding")]
    assert "kube-api-access" not in {v["name"] for v in pod_spec(objs)["volumes"]}
    assert KUBE_API_DIR not in {m["mountPath"] for m in container(objs)["volumeMounts"]}
    assert env_of(objs)[ENV_PREFIX + "ROTATION_POLL_INTERVAL"] == "0"
    for obj in objs:
        k8s_validate(obj)


def test_rotation_notes() -> None:
    with helm.Chart.load(CHART_DIR) as chart:

        def notes(values: dict[str, Any]) -> str:
            text: str = chart.render(values, name=RELEASE, namespace=NAMESPACE)[
                "extension-server/templates/NOTES.txt"
            ]
            return " ".join(text.split())

        on = notes(CONFIGS["rotation"])
        assert f"every 45s (Lease {NAMESPACE}/{ROTATION_LEASE})" in on
        assert f"ClusterRole {ROTATION} lets it get and patch ListenerContextExamples" in on
        assert "Rotation watcher: off (no store configured" in notes({})
        zero = {**VAULT_TOKEN_VALUES, "rotation": {"pollInterval": "0s"}}
        assert "Rotation watcher: off (rotation.pollInterval is 0s)" in notes(zero)


def test_rotation_rbac_allows_the_watchers_requests_and_nothing_unused(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """The server's own patcher and Lease elector against the API stand-in, as two replicas:
    every request they send is allowed by the rendered RBAC, and every verb it grants is
    used by one of them."""
    objs = rendered["rotation"]
    env = env_of(objs)
    lease_namespace = env[ENV_PREFIX + "ROTATION_LEASE_NAMESPACE"]
    lease_name = env[ENV_PREFIX + "ROTATION_LEASE_NAME"]
    account = one(objs, "ServiceAccount")["metadata"]
    rules = [
        (rule, scope)
        for rule, scope in grants(
            objs,
            {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]},
        )
        if rule["apiGroups"] != ["events.k8s.io"]  # Events': tests/test_events_chart.py
    ]
    source = {"vault": {"path": "secret/data/gateways/{ns}/web", "key": "password"}}
    with KubeStandIn() as kube:
        for namespace in ("team-a", "team-b", "team-c"):
            reads = {
                "vault": {**source["vault"], "path": source["vault"]["path"].format(ns=namespace)}
            }
            spec = {
                "targetRefs": [{"kind": "Gateway", "name": "eg"}],
                "username": "u",
                "passwordFrom": reads,
            }
            kube.put_policy({"metadata": {"name": "web", "namespace": namespace}, "spec": spec})
        client = kube.client()
        policies = PolicyClient(client, page=2)  # two pages: list, list with `continue`
        templates = Templates(DEFAULT_VAULT_TEMPLATE, DEFAULT_AWS_TEMPLATE)
        listed = [watched_policy(obj, {"vault"}, templates) for obj in policies.listed()]
        watched = {p.ref.namespace: p for p in listed if p is not None}
        first = LeaseElector(client, lease_namespace, lease_name, "replica-a", 135)
        second = LeaseElector(client, lease_namespace, lease_name, "replica-b", 135)
        assert first.lead()  # no Lease yet: get (404), create
        assert not second.lead()  # held by the other replica: get
        assert first.lead()  # renewed: get, update
        for namespace in ("team-a", "team-b"):
            assert policies.ensure_revision(watched[namespace], "3f2a9c0d1b7e4a65")
        kube.delete("ListenerContextExample", "team-c", "web")
        assert not policies.ensure_revision(watched["team-c"], "3f2a9c0d1b7e4a65")  # deleted
        first.release(5.0)  # shutdown: get, update
        requests = [attributes(r.method, r.path) for r in kube.requests]
        patched = kube.get("ListenerContextExample", "team-b", "web")
    assert patched is not None
    assert patched["spec"]["credentialsRevision"] == "3f2a9c0d1b7e4a65"
    assert {(r.verb, r.resource) for r in requests} == {
        ("list", "listenercontextexamples"),
        ("patch", "listenercontextexamples"),
        ("get", "leases"),
        ("create", "leases"),
        ("update", "leases"),
    }
    assert_each_allowed_and_each_grant_used(rules, requests)
    # And what it must not allow: another Lease, a Lease elsewhere, listing or deleting.
    for method, path in [
        ("GET", f"/apis/coordination.k8s.io/v1/namespaces/{lease_namespace}/leases/other"),
        ("PUT", f"/apis/coordination.k8s.io/v1/namespaces/{lease_namespace}/leases/other"),
        ("POST", "/apis/coordination.k8s.io/v1/namespaces/team-a/leases"),
        (
            "GET",
            "/apis/example.extensions.io/v1alpha1/namespaces/team-a/listenercontextexamples/web",
        ),
        (
            "PUT",
            "/apis/example.extensions.io/v1alpha1/namespaces/team-a/listenercontextexamples/web",
        ),
        (
            "DELETE",
            "/apis/example.extensions.io/v1alpha1/namespaces/team-a/listenercontextexamples/web",
        ),
        ("POST", "/apis/example.extensions.io/v1alpha1/namespaces/team-a/listenercontextexamples"),
    ]:
        assert not allowing(rules, attributes(method, path)), (method, path)


def test_secret_material_is_only_ever_a_mounted_file(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    token_env = env_of(rendered["vault-token"])
    assert token_env[ENV_PREFIX + "VAULT_TOKEN_FILE"] == "/etc/extension-server/vault-token/token"
    approle_env = env_of(rendered["vault-approle"])
    assert approle_env[ENV_PREFIX + "VAULT_APPROLE_ROLE_ID"] == "4f1e-role-id"
    assert approle_env[ENV_PREFIX + "VAULT_APPROLE_SECRET_ID_FILE"].endswith("/secret-id")
    for objs in rendered.values():
        env = env_of(objs)  # plain name/value pairs only, no valueFrom
        assert not {"VAULT_TOKEN", ENV_PREFIX + "VAULT_TOKEN"} & set(env)
        assert not [v for v in env.values() if VAULT_TOKEN in v or APPROLE_SECRET_ID in v]
    # values.yaml has no key a token or secret_id could be written into.
    with helm.Chart.load(CHART_DIR) as chart:
        for values in (
            {"vault": {"token": "hvs.x"}},
            {"vault": {"token": {"value": "hvs.x"}}},
            {"vault": {"approle": {"secretId": "x"}}},
        ):
            with pytest.raises(helm.HelmValuesError):
                chart.validate_schema(chart.merge_values(values))


def test_aws_irsa_annotates_the_service_account(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objs = rendered["aws-irsa"]
    sa = one(objs, "ServiceAccount")
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": IRSA_ROLE}
    assert pod_spec(objs)["serviceAccountName"] == sa["metadata"]["name"]
    env = env_of(objs)
    assert env[ENV_PREFIX + "AWS_REGION"] == "eu-west-1"
    assert (
        env[ENV_PREFIX + "AWS_ROLE_ARN"] == "arn:aws:iam::210987654321:role/gateway-secrets-reader"
    )
    assert env[ENV_PREFIX + "AWS_SECRET_TEMPLATE"] == "eg/{namespace}/"
    assert env[ENV_PREFIX + "AWS_ENDPOINT_URL"].startswith("https://vpce-")


def test_pod_disruption_budget(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered["replicas-3"]
    assert one(objs, "Deployment")["spec"]["replicas"] == 3
    pdb = one(objs, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["minAvailable"] == 1
    pod_labels = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert not [o for o in rendered["defaults"] if o["kind"] == "PodDisruptionBudget"]
    with helm.Chart.load(CHART_DIR) as chart:
        text = chart.render(
            {"podDisruptionBudget": {"enabled": True, "minAvailable": "50%"}},
            name=RELEASE,
            namespace=NAMESPACE,
        )
    forced = yaml.safe_load(text["extension-server/templates/pdb.yaml"])
    assert forced["spec"]["minAvailable"] == "50%"
    k8s_validate(forced)


def test_metrics_port_and_prometheus_annotations(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objs = rendered["replicas-3"]
    annotations = one(objs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9102",
        "prometheus.io/path": "/metrics",
    }
    assert {"name": "metrics", "containerPort": 9102, "protocol": "TCP"} in container(objs)["ports"]
    assert env_of(objs)[ENV_PREFIX + "METRICS_PORT"] == "9102"
    off = rendered["vault-token"]
    assert "annotations" not in one(off, "Deployment")["spec"]["template"]["metadata"]
    assert [p["name"] for p in container(off)["ports"]] == ["grpc"]
    assert env_of(off)[ENV_PREFIX + "METRICS_PORT"] == "0"


def network_policy(values: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The NetworkPolicy these values render, checked with helm lint and kubernetes-validate,
    and the Deployment's container ports."""
    for report in (
        helm.lint(CHART_DIR, values, namespace=NAMESPACE),
        helm.lint(CHART_DIR, values, namespace=NAMESPACE, strict=True, kube_version=KUBE_VERSION),
    ):
        problems = report["errors"] + [m for m in report["messages"] if m["severity"] >= 2]
        assert problems == [], values
    with helm.Chart.load(CHART_DIR) as chart:
        files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objs = manifests(files)
    for obj in objs:
        k8s_validate(obj)
    return one(objs, "NetworkPolicy"), container(objs)["ports"]


def envoy_gateway_rule(namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    """Ingress to the gRPC port from one peer: pods with these labels in that namespace."""
    return {
        "from": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "podSelector": {"matchLabels": labels},
            }
        ],
        "ports": [{"port": "grpc", "protocol": "TCP"}],
    }


def test_network_policy_admits_only_envoy_gateway(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objs = rendered["network-policy"]
    policy = one(objs, "NetworkPolicy")
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    assert policy["metadata"]["namespace"] == NAMESPACE
    spec = policy["spec"]
    # It selects the server's pods, and only them (the Deployment's own selector).
    deployment = one(objs, "Deployment")
    assert spec["podSelector"] == deployment["spec"]["selector"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert spec["policyTypes"] == ["Ingress"]
    grpc_rule, metrics_rule, extra_rule = spec["ingress"]
    # Envoy Gateway's pods in envoyGateway.namespace: one peer carrying both selectors
    # (two peers would admit the whole namespace, or those labels in every namespace).
    assert grpc_rule == envoy_gateway_rule("gateway-system", {"control-plane": "envoy-gateway"})
    # The namespace is the one the RBAC binding names for Envoy Gateway's ServiceAccount.
    (subject,) = named(objs, "ClusterRoleBinding", "envoy-gateway-listener-context")["subjects"]
    assert subject["namespace"] == "gateway-system"
    assert metrics_rule == {
        "from": [PROMETHEUS_PEER],
        "ports": [{"port": "metrics", "protocol": "TCP"}],
    }
    assert extra_rule == EXTRA_INGRESS
    # Every named port the policy opens is a container port of that name (a name the pod
    # lacks would match nothing), and the gRPC one is the server's 5005.
    ports = {p["name"]: p["containerPort"] for p in container(objs)["ports"]}
    for rule in spec["ingress"]:
        for port in rule["ports"]:
            assert port["port"] in ports, port
    assert ports["grpc"] == 5005
    # Nothing else in the rules: no rule without `from` (which would admit everyone).
    assert all(rule["from"] for rule in spec["ingress"])


def test_network_policy_is_on_by_default(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The default install admits only Envoy Gateway's pods to the hook; switching it off is
    a value, and values.yaml says what that exposes and what a wrong selector does."""
    for config, objs in rendered.items():
        kinds = [o["kind"] for o in objs]
        assert kinds.count("NetworkPolicy") == (config != "no-network-policy"), config
    assert one(rendered["defaults"], "NetworkPolicy")["spec"]["ingress"] == [
        envoy_gateway_rule(NAMESPACE, {"control-plane": "envoy-gateway"})
    ]
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())["networkPolicy"]
    assert defaults == {
        "enabled": True,
        "envoyGatewayPodLabels": {"control-plane": "envoy-gateway"},
        "metricsFrom": [],
        "extraIngress": [],
    }
    comments = re.sub(r"\s*\n\s*#\s*", " ", (CHART_DIR / "values.yaml").read_text())
    assert "any pod in the cluster can call it and collect the password hashes" in comments
    assert "cuts Envoy Gateway off. With failOpen false" in comments
    assert "no xDS update reaches Envoy" in comments


def test_network_policy_metrics_port_only_for_listed_peers() -> None:
    # metricsFrom empty (the default): the metrics port is not opened, only gRPC is.
    policy, ports = network_policy({"networkPolicy": {"enabled": True}})
    assert policy["spec"]["ingress"] == [
        envoy_gateway_rule("envoy-gateway-system", {"control-plane": "envoy-gateway"})
    ]
    assert "metrics" in {p["name"] for p in ports}
    # Metrics off: no metrics port, so no rule for it even with metricsFrom.
    policy, ports = network_policy(
        {
            "metrics": {"enabled": False},
            "networkPolicy": {"enabled": True, "metricsFrom": [PROMETHEUS_PEER]},
        }
    )
    assert [r["ports"] for r in policy["spec"]["ingress"]] == [
        [{"port": "grpc", "protocol": "TCP"}]
    ]
    assert [p["name"] for p in ports] == ["grpc"]
    # Several peers, an ipBlock among them, on the port named metrics (metrics.port 9102).
    peers = [PROMETHEUS_PEER, {"ipBlock": {"cidr": "192.168.10.0/24"}}]
    policy, ports = network_policy(
        {"metrics": {"port": 9102}, "networkPolicy": {"enabled": True, "metricsFrom": peers}}
    )
    _, metrics_rule = policy["spec"]["ingress"]
    assert metrics_rule == {"from": peers, "ports": [{"port": "metrics", "protocol": "TCP"}]}
    assert {"name": "metrics", "containerPort": 9102, "protocol": "TCP"} in ports


def test_network_policy_does_not_open_the_health_port() -> None:
    """With TLS the pod has a plaintext health port for the kubelet's probes. The kubelet
    probes from the pod's own node, which NetworkPolicy always admits, so the policy opens
    that port to nobody: the same rules as without TLS."""
    values = {
        "tls": {"enabled": True, "secretName": "extension-server-tls"},
        "networkPolicy": {"enabled": True, "metricsFrom": [PROMETHEUS_PEER]},
    }
    policy, ports = network_policy(values)
    assert {"name": "health", "containerPort": 5006, "protocol": "TCP"} in ports
    grpc_rule, metrics_rule = policy["spec"]["ingress"]
    assert grpc_rule == envoy_gateway_rule(
        "envoy-gateway-system", {"control-plane": "envoy-gateway"}
    )
    assert metrics_rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    opened = [port for rule in policy["spec"]["ingress"] for port in rule["ports"]]
    assert all(port["port"] not in ("health", 5006) for port in opened), opened
    without_tls, _ = network_policy({k: v for k, v in values.items() if k != "tls"})
    assert without_tls == policy


def test_network_policy_follows_the_envoy_gateway_labels() -> None:
    """Other labels for Envoy Gateway's pods (here gateway-helm's release labels), with the
    default one removed (null), and a release namespace other than Envoy Gateway's."""
    labels = {"app.kubernetes.io/name": "gateway-helm", "app.kubernetes.io/instance": "eg"}
    values = {
        "networkPolicy": {
            "enabled": True,
            "envoyGatewayPodLabels": {**labels, "control-plane": None},
        }
    }
    policy, _ = network_policy(values)
    assert policy["spec"]["ingress"] == [envoy_gateway_rule("envoy-gateway-system", labels)]


@pytest.mark.parametrize(
    ("labels", "where"),
    [
        ({"control-plane": None}, "minProperties"),  # the default removed, none given
        (None, "missing property 'envoyGatewayPodLabels'"),
    ],
    ids=["empty", "null"],
)
def test_network_policy_needs_envoy_gateway_labels(labels: Any, where: str) -> None:
    """No labels would be an empty podSelector: every pod of Envoy Gateway's namespace.
    Install (render) and lint refuse it. (Not through chart.validate_schema: that coalesces
    the defaults in again and so brings control-plane back.)"""
    values = {"networkPolicy": {"enabled": True, "envoyGatewayPodLabels": labels}}
    with helm.Chart.load(CHART_DIR) as chart, pytest.raises(helm.HelmValuesError, match=where):
        chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    report = helm.lint(CHART_DIR, values, namespace=NAMESPACE)
    assert any(where in e for e in report["errors"]), report


def test_notes_tell_envoy_gateway_about_tls() -> None:
    """With TLS on, the gateway-helm values the notes print carry the tls references."""
    with helm.Chart.load(CHART_DIR) as chart:
        notes = chart.render(CONFIGS["tls-mtls"], name=RELEASE, namespace=NAMESPACE)[
            "extension-server/templates/NOTES.txt"
        ]
    heredoc = re.search(r"cat > envoy-gateway-values.yaml <<'EOF'\n(.*?)\n\s*EOF\n", notes, re.S)
    assert heredoc, notes
    values = yaml.safe_load(textwrap.dedent(heredoc.group(1)))
    service = values["config"]["envoyGateway"]["extensionManager"]["service"]
    assert service["fqdn"]["hostname"] == f"{RELEASE}.{NAMESPACE}.svc.cluster.local"
    assert service["tls"] == {
        "certificateRef": {"name": "<ca-secret>"},
        "clientCertificateRef": {"name": "<client-cert-secret>"},
    }
    assert "gRPC transport: mTLS" in notes


def test_cert_manager_issues_both_ends_of_mtls(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The server's certificate for every name of its Service, Envoy Gateway's client
    certificate in Envoy Gateway's namespace, both from the one issuer; the server mounts
    its Secret and requires client certificates that chain to the ca.crt in it."""
    objs = rendered["cert-manager"]
    certificates = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Certificate"}
    assert set(certificates) == {RELEASE, "envoy-gateway-extension-client"}
    issuer = {"name": "extension-server-ca", "kind": "Issuer", "group": "cert-manager.io"}
    server, client = certificates[RELEASE], certificates["envoy-gateway-extension-client"]
    for certificate in (server, client):
        assert certificate["apiVersion"] == "cert-manager.io/v1"
        spec = certificate["spec"]
        assert spec["issuerRef"] == issuer
        assert (spec["duration"], spec["renewBefore"]) == ("2160h", "360h")
        assert spec["privateKey"] == {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"}
        assert set(spec) <= {
            *("secretName", "duration", "renewBefore", "dnsNames", "commonName", "usages"),
            *("privateKey", "issuerRef"),
        }
    assert server["metadata"]["namespace"] == NAMESPACE
    assert server["spec"]["secretName"] == "extension-server-tls"
    service = one(objs, "Service")["metadata"]["name"]
    assert server["spec"]["dnsNames"] == [
        f"{service}.{NAMESPACE}.svc.cluster.local",
        f"{service}.{NAMESPACE}.svc",
        f"{service}.{NAMESPACE}",
        service,
    ]
    assert server["spec"]["usages"] == ["digital signature", "server auth"]
    assert client["metadata"]["namespace"] == NAMESPACE  # envoyGateway.namespace
    assert client["spec"]["secretName"] == "envoy-gateway-extension-client"
    assert client["spec"]["usages"] == ["digital signature", "client auth"]
    volumes = {v["name"]: v["secret"] for v in pod_spec(objs)["volumes"] if "secret" in v}
    assert volumes["tls"]["secretName"] == "extension-server-tls"
    assert volumes["tls-client-ca"] == {
        "secretName": "extension-server-tls",
        "defaultMode": 0o440,
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }
    assert flags_of(objs) == {"--health-port": "5006"}
    # Without cert-manager, no Certificate.
    assert not [o for o in rendered["tls-mtls"] if o["kind"] == "Certificate"]


def test_cert_manager_needs_no_tls_secret_name() -> None:
    """cert-manager names the server's Secret itself: tls.enabled with it needs no
    tls.secretName (without it, tls.enabled does)."""
    cert_manager = {"enabled": True, "issuerRef": {"name": "extension-server-ca"}}
    with helm.Chart.load(CHART_DIR) as chart:
        files = chart.render(
            {"tls": {"enabled": True, "certManager": cert_manager}},
            name=RELEASE,
            namespace=NAMESPACE,
            is_install=True,
        )
    volumes = {v["name"]: v for v in pod_spec(manifests(files))["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "extension-server-tls"


def test_cert_manager_with_an_issuer_needs_envoy_gateways_namespace() -> None:
    """A namespaced Issuer signs only in its own namespace: a release outside Envoy Gateway's
    namespace needs a ClusterIssuer, and the chart says so instead of rendering a
    Certificate that would never be issued."""
    values: dict[str, Any] = {
        "tls": {"certManager": {"enabled": True, "issuerRef": {"name": "ca"}}},
        "envoyGateway": {"namespace": "gateway-system"},
    }
    with helm.Chart.load(CHART_DIR) as chart:
        with pytest.raises(helm.HelmError, match="use a ClusterIssuer"):
            chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        values["tls"]["certManager"]["issuerRef"]["kind"] = "ClusterIssuer"
        files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    client = [
        doc
        for doc in yaml.safe_load_all(files["extension-server/templates/certificates.yaml"])
        if doc and doc["spec"]["secretName"] == "envoy-gateway-extension-client"
    ]
    assert [c["metadata"]["namespace"] for c in client] == ["gateway-system"]


# --- wrong values fail ---------------------------------------------------------------------

WRONG_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "unknown-auth": ({"vault": {"addr": "https://v:8200", "auth": "ldap"}}, "/vault/auth"),
    "duration-no-unit": ({"secretCache": {"ttl": "60"}}, "/secretCache/ttl"),
    "duration-words": ({"backendTimeout": "2 seconds"}, "/backendTimeout"),
    "duration-days": ({"secretCache": {"maxStale": "1d"}}, "/secretCache/maxStale"),
    "duration-number": ({"shutdownGrace": 15}, "/shutdownGrace"),
    "metrics-port-high": ({"metrics": {"port": 70000}}, "/metrics/port"),
    "metrics-port-grpc": ({"metrics": {"port": 5005}}, "/metrics/port"),
    "service-port-zero": ({"service": {"port": 0}}, "/service/port"),
    "health-port-zero": ({"healthPort": 0}, "/healthPort"),
    "health-port-high": ({"healthPort": 65536}, "/healthPort"),
    "health-port-grpc": ({"healthPort": 5005}, "/healthPort"),
    "health-port-string": ({"healthPort": "5006"}, "/healthPort"),
    "kubernetes-no-role": (
        {"vault": {"addr": "https://v:8200", "auth": "kubernetes"}},
        "/vault/role",
    ),
    "kubernetes-no-addr": ({"vault": {"auth": "kubernetes", "role": "r"}}, "/vault/addr"),
    "tls-no-secret": ({"tls": {"enabled": True}}, "/tls/secretName"),
    "client-ca-without-tls": ({"tls": {"clientCA": {"secretName": "ca"}}}, "/tls/enabled"),
    "token-no-secret": ({"vault": {"addr": "https://v:8200"}}, "/vault/token/secretName"),
    "approle-no-secret-id": (
        {"vault": {"addr": "https://v:8200", "auth": "approle", "approle": {"roleId": "r"}}},
        "/vault/approle/secretId/secretName",
    ),
    "two-vault-cas": (
        {
            "vault": {
                "addr": "https://v:8200",
                "token": {"secretName": "t"},
                "caCert": {"secretName": "a", "configMapName": "b"},
            }
        },
        "/vault/caCert",
    ),
    "template-no-namespace": ({"vault": {"pathTemplate": "secret/data/x/"}}, "/vault/pathTemplate"),
    "template-no-slash": ({"aws": {"secretTemplate": "gw/{namespace}"}}, "/aws/secretTemplate"),
    "log-format": ({"logFormat": "text"}, "/logFormat"),
    "workers": ({"workers": 0}, "/workers"),
    "size-words": ({"maxMessageSize": "4 megabytes"}, "/maxMessageSize"),
    "timeout-words": ({"callTimeout": "ten seconds"}, "/callTimeout"),
    "pdb-min-available": ({"podDisruptionBudget": {"minAvailable": "half"}}, "minAvailable"),
    "vault-addr-scheme": ({"vault": {"addr": "vault:8200"}}, "/vault/addr"),
    "role-arn": ({"aws": {"roleArn": "extension-server"}}, "/aws/roleArn"),
    "netpol-label-value": (
        {"networkPolicy": {"envoyGatewayPodLabels": {"control-plane": "envoy gateway"}}},
        "/networkPolicy/envoyGatewayPodLabels",
    ),
    "netpol-peer-typo": (
        {"networkPolicy": {"metricsFrom": [{"podSelectors": {}}]}},
        "/networkPolicy/metricsFrom/0",
    ),
    "netpol-empty-peer": ({"networkPolicy": {"metricsFrom": [{}]}}, "/networkPolicy/metricsFrom/0"),
    "netpol-rule-typo": (
        {"networkPolicy": {"extraIngress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}},
        "/networkPolicy/extraIngress/0",
    ),
    "netpol-unknown-key": ({"networkPolicy": {"metricsPort": 9090}}, "/networkPolicy"),
    "rotation-no-unit": ({"rotation": {"pollInterval": "30"}}, "/rotation/pollInterval"),
    "rotation-number": ({"rotation": {"pollInterval": 30}}, "/rotation/pollInterval"),
    "rotation-negative": ({"rotation": {"pollInterval": "-1s"}}, "/rotation/pollInterval"),
    "rotation-lease-name": ({"rotation": {"leaseName": "Rotation_Lease"}}, "/rotation/leaseName"),
    "rotation-lease-empty": ({"rotation": {"leaseName": ""}}, "/rotation/leaseName"),
    "cert-manager-no-issuer": ({"tls": {"certManager": {"enabled": True}}}, "/tls/certManager"),
    "cert-manager-duration": (
        {"tls": {"certManager": {"duration": "90 days"}}},
        "/tls/certManager/duration",
    ),
    "prometheus-rule-label": (
        {"prometheusRule": {"labels": {"release": "kube prometheus"}}},
        "/prometheusRule/labels",
    ),
    "rotation-unknown-key": ({"rotation": {"leaseNamespace": "other"}}, "/rotation"),
}


@pytest.mark.parametrize("name", list(WRONG_VALUES))
def test_wrong_values_fail(name: str) -> None:
    values, where = WRONG_VALUES[name]
    with helm.Chart.load(CHART_DIR) as chart:
        with pytest.raises(helm.HelmValuesError, match=where):
            chart.validate_schema(chart.merge_values(values))
        with pytest.raises(helm.HelmValuesError, match=where):
            chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    report = helm.lint(CHART_DIR, values, namespace=NAMESPACE)
    assert report["errors"] or [m for m in report["messages"] if m["severity"] >= 3]


def test_a_health_port_on_the_metrics_port_fails_with_tls() -> None:
    """The server would fail to listen twice on one port: the chart refuses to render it
    (install, upgrade, template; helm lint only logs a template's `fail`). Without TLS, or
    with metrics off, the health port is not opened, so the same number is fine."""
    tls = {"enabled": True, "secretName": "extension-server-tls"}
    clash = {"tls": tls, "healthPort": 9102, "metrics": {"port": 9102}}
    with helm.Chart.load(CHART_DIR) as chart:
        with pytest.raises(helm.HelmError, match=r"healthPort and metrics\.port must differ"):
            chart.render(clash, name=RELEASE, namespace=NAMESPACE, is_install=True)
        for fine in (
            {"healthPort": 9090},
            {"tls": tls, "healthPort": 9090, "metrics": {"enabled": False}},
        ):
            chart.render(fine, name=RELEASE, namespace=NAMESPACE, is_install=True)


def test_schema_is_valid_draft7() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert list(jsonschema.Draft7Validator(schema).iter_errors(defaults)) == []


def test_schema_durations_are_server_durations() -> None:
    """What the schema's duration pattern accepts, the server parses."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    pattern = jsonschema.Draft7Validator(schema["properties"]["backendTimeout"])
    seconds = {"250ms": 0.25, "2s": 2, "1.5s": 1.5, "15m": 900, "1h": 3600, "0s": 0}
    for text, value in seconds.items():
        assert pattern.is_valid(text), text
        assert Duration().convert(text, None, None) == value
    for text in ("60", "1d", "-1s", " 5s", "5 s", "s"):
        assert not pattern.is_valid(text), text
    # rotation.pollInterval: the same durations, and a bare 0 (string or integer) for off.
    interval = jsonschema.Draft7Validator(
        schema["properties"]["rotation"]["properties"]["pollInterval"]
    )
    for text, value in {**seconds, "0": 0}.items():
        assert interval.is_valid(text), text
        assert Duration().convert(text, None, None) == value
    assert interval.is_valid(0)
    for bad in ("60", "1d", "-1s", "00s ", 30, 0.5, "off"):
        assert not interval.is_valid(bad), bad


# --- the helm install / upgrade examples of docs/chart.md and docs/guide.md ----------------

DOCS_DIR = CHART_DIR.parent.parent / "docs"
DOCS = DOCS_DIR / "chart.md"
GUIDE = DOCS_DIR / "guide.md"
# The guide is one walk-through: each command runs after the ones before it, on the same
# release. chart.md's examples are alternatives, each a fresh install.
SEQUENTIAL_DOCS = ("guide.md",)
# helm flags that take the next word as their argument
HELM_FLAGS_WITH_ARGUMENT = {
    *("-n", "--namespace", "-f", "--values", "--set", "--set-string", "--version")
}


@dataclass
class HelmCommand:
    """One `helm install` or `helm upgrade` of a doc, with the values the release then has."""

    name: str
    verb: str
    release: str
    values: dict[str, Any]
    problems: list[str]


def doc_helm_commands(path: Path) -> list[HelmCommand]:
    """Each `helm install` and `helm upgrade` of `path`, with the values its -f files, --set
    and --set-string give (and, with --reuse-values, the release's values before it). In a
    SEQUENTIAL_DOCS walk-through, a second install of a release, or an upgrade that drops
    the values set before (no --reuse-values and no -f), is a problem."""
    text = path.read_text()
    doc = f"docs/{path.name}"
    sequential = path.name in SEQUENTIAL_DOCS
    files = {
        match.group(1): docs[0]
        for block in re.findall(r"```yaml\n(.*?)```", text, re.S)
        if (match := re.match(r"# (\S+\.yaml)\n", block))
        and len(docs := [d for d in yaml.safe_load_all(block) if d]) == 1
    }
    releases: dict[str, dict[str, Any]] = {}
    commands: list[HelmCommand] = []
    for block in re.findall(r"```shell\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if not line.startswith("helm "):
                continue
            words = shlex.split(line, comments=True)
            verb, flags = words[1], words[2:]
            if verb not in ("install", "upgrade"):
                continue
            positional = [
                word
                for before, word in zip(["", *flags[:-1]], flags, strict=True)
                if not word.startswith("-") and before not in HELM_FLAGS_WITH_ARGUMENT
            ]
            release, chart = positional[:2]
            if chart != "./charts/extension-server":
                continue  # Envoy Gateway's own chart: tests/test_gateway_helm.py
            problems = []
            values: dict[str, Any] = {}
            if verb == "install" and sequential and release in releases:
                problems.append(f"installs {release} again: helm refuses to re-use a name")
            if verb == "upgrade":
                if sequential and release not in releases and "--install" not in flags:
                    problems.append(f"upgrades {release} before any install of it")
                if "--reuse-values" in flags:
                    values = releases.get(release, {})
                elif "-f" not in flags and "--values" not in flags:
                    problems.append("upgrades without --reuse-values or -f: drops earlier values")
            for flag, arg in itertools.pairwise(words):
                if flag in ("-f", "--values"):
                    values = deep_merge(values, files[arg])
                elif flag == "--set":
                    values = deep_merge(values, helm.parse_set_string(arg))
                elif flag == "--set-string":
                    values = deep_merge(values, helm.parse_set_string_values(arg))
            if sequential:
                releases[release] = values
            name = f"{doc}#{len(commands)}"
            commands.append(HelmCommand(name, verb, release, values, problems))
    return commands


def doc_installs() -> list[tuple[str, dict[str, Any]]]:
    """Each `helm install` of docs/chart.md with the values its -f files and --set give."""
    return [(c.name, c.values) for c in doc_helm_commands(DOCS) if c.verb == "install"]


def every_doc_command() -> list[HelmCommand]:
    return [*doc_helm_commands(DOCS), *doc_helm_commands(GUIDE)]


def test_docs_have_the_install_examples() -> None:
    installs = dict(doc_installs())
    assert len(installs) >= 6
    values = list(installs.values())
    assert any(v.get("vault", {}).get("auth") == "kubernetes" for v in values)
    assert any(v.get("vault", {}).get("auth") == "approle" for v in values)
    assert any(v.get("aws", {}).get("roleArn") for v in values)
    assert any(v.get("tls", {}).get("clientCA") for v in values)
    assert any(v.get("rotation", {}).get("pollInterval") == "0" for v in values)  # --set-string


def test_docs_helm_commands_have_no_problem() -> None:
    problems = [(c.name, p) for c in every_doc_command() for p in c.problems]
    assert problems == []


def test_guide_installs_once_then_upgrades_keeping_the_values() -> None:
    """The guide installs the release in step 3 and upgrades it after: a second
    `helm install` fails ("cannot re-use a name"), and an upgrade without --reuse-values
    silently drops the store settings of step 7."""
    commands = doc_helm_commands(GUIDE)
    assert [c.verb for c in commands] == ["install", "upgrade", "upgrade", "upgrade"]
    assert {c.release for c in commands} == {RELEASE}
    vault, aws, tls = (c.values for c in commands[1:])
    assert vault["vault"]["auth"] == "kubernetes" and vault["forbidPlaintext"] is True
    assert aws["aws"]["region"] == "eu-west-1"
    assert "eks.amazonaws.com/role-arn" in aws["serviceAccount"]["annotations"]
    # step 8 keeps what step 7 set
    assert tls["tls"]["certManager"] == {
        "enabled": True,
        "issuerRef": {"name": "extension-server-ca"},
    }
    assert tls["vault"] == vault["vault"] and tls["aws"] == aws["aws"]
    assert tls["forbidPlaintext"] is True


def test_the_problem_checks_catch_the_old_guide(tmp_path: Path) -> None:
    """The guide as it was (install twice, upgrade without --reuse-values) has problems."""
    text = GUIDE.read_text()
    old = tmp_path / "guide.md"
    old.write_text(
        text.replace(
            "helm upgrade -n envoy-gateway-system extension-server ./charts/extension-server"
            " --reuse-values",
            "helm upgrade -n envoy-gateway-system extension-server ./charts/extension-server",
        )
    )
    problems = [p for c in doc_helm_commands(old) for p in c.problems]
    assert sum("drops earlier values" in p for p in problems) == 3
    old.write_text(text.replace("helm upgrade", "helm install").replace(" --reuse-values", ""))
    problems = [p for c in doc_helm_commands(old) for p in c.problems]
    assert sum("re-use a name" in p for p in problems) == 3


@pytest.mark.parametrize("command", every_doc_command(), ids=[c.name for c in every_doc_command()])
def test_doc_install_example_renders_valid_kubernetes(command: HelmCommand) -> None:
    with helm.Chart.load(CHART_DIR) as chart:
        files = chart.render(
            command.values,
            name=command.release,
            namespace=NAMESPACE,
            is_install=command.verb == "install",
            is_upgrade=command.verb == "upgrade",
        )
    objs = manifests(files)
    assert objs, command.name
    for obj in objs:
        if obj["kind"] not in CRD_KINDS.get(obj["apiVersion"], ()):
            k8s_validate(obj)


# --- 3. the rendered Deployment starts the server ------------------------------------------


@dataclass
class Cluster:
    """The Secrets and ConfigMaps the configurations name, with real content."""

    server_ca: Authority
    client: Pem  # Envoy Gateway's client certificate (mTLS)
    secrets: dict[str, dict[str, bytes]] = field(default_factory=dict)
    config_maps: dict[str, dict[str, bytes]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    server_ca, client_ca, vault_ca = Authority("es-ca"), Authority("eg-client-ca"), Authority()
    cluster_ca = Authority("kubernetes")
    server = server_ca.issue("extension-server", server=True)
    remember(VAULT_TOKEN, APPROLE_SECRET_ID)
    return Cluster(
        server_ca=server_ca,
        client=client_ca.issue("envoy-gateway", server=False),
        secrets={
            # ca.crt: as cert-manager writes it, the issuer's CA. Here it is the CA that signs
            # Envoy Gateway's certificate (cluster.client), which is what the server uses it
            # for with tls.certManager.enabled.
            "extension-server-tls": {
                "tls.crt": server.cert,
                "tls.key": server.key,
                "ca.crt": client_ca.pem,
            },
            "envoy-gateway-client-ca": {"ca.crt": client_ca.pem},
            "vault-token": {"token": VAULT_TOKEN.encode()},
            "vault-approle": {"secret-id": APPROLE_SECRET_ID.encode()},
            "vault-ca": {"bundle.pem": vault_ca.pem},
        },
        # kube-root-ca.crt: the cluster CA that every namespace gets.
        config_maps={
            "vault-ca": {"ca.crt": vault_ca.pem},
            "kube-root-ca.crt": {"ca.crt": cluster_ca.pem},
        },
    )


def service_account_jwt(audience: str | None) -> bytes:
    """A token shaped like the kubelet's projected one (never verified: Vault is not called)."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    claims = {"sub": f"system:serviceaccount:{NAMESPACE}:{RELEASE}", "aud": [audience or "api"]}
    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl".encode()


def kubelet_mounts(spec: dict[str, Any], cluster: Cluster, root: Path) -> dict[str, Path]:
    """Write each mounted volume's files as the kubelet would; mountPath -> local directory.

    A Secret, ConfigMap or key the configuration names but the cluster lacks raises
    KeyError, as the kubelet fails such a mount."""
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts: dict[str, Path] = {}
    for mount in spec["containers"][0]["volumeMounts"]:
        volume, local = volumes[mount["name"]], root / mount["name"]
        local.mkdir(parents=True)
        mounts[mount["mountPath"]] = local
        files: dict[str, bytes] = {}
        if "secret" in volume:
            data, source = cluster.secrets[volume["secret"]["secretName"]], volume["secret"]
        elif "configMap" in volume:
            data, source = cluster.config_maps[volume["configMap"]["name"]], volume["configMap"]
        elif "projected" in volume:
            source = volume["projected"]
            for projection in source["sources"]:
                if "serviceAccountToken" in projection:
                    token = projection["serviceAccountToken"]
                    files[token["path"]] = service_account_jwt(token.get("audience"))
                elif "configMap" in projection:
                    config_map = cluster.config_maps[projection["configMap"]["name"]]
                    for item in projection["configMap"]["items"]:
                        files[item["path"]] = config_map[item["key"]]
                else:
                    for item in projection["downwardAPI"]["items"]:
                        assert item["fieldRef"]["fieldPath"] == "metadata.namespace", item
                        files[item["path"]] = NAMESPACE.encode()
            data = {}
        else:
            assert "emptyDir" in volume, volume
            continue
        for item in source.get("items", [{"key": k, "path": k} for k in data]):
            files[item["path"]] = data[item["key"]]
        for path, content in files.items():
            (local / path).write_bytes(content)
            (local / path).chmod(source.get("defaultMode", 0o644))
    return mounts


def relocate(value: str, mounts: dict[str, Path]) -> str:
    for mount_path, local in mounts.items():
        if value == mount_path or value.startswith(mount_path + "/"):
            return str(local) + value[len(mount_path) :]
    return value


class ConnectionRecorder:
    """A TCP listener standing in for Vault or AWS: counts the connections made to it."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self._socket.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._socket.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._socket.close()


@pytest.fixture
def recorder() -> Iterator[ConnectionRecorder]:
    recording = ConnectionRecorder()
    yield recording
    recording.close()


def pod_environment(
    objs: list[dict[str, Any]], mounts: dict[str, Path], recorder: ConnectionRecorder, tmp: Path
) -> tuple[dict[str, str], int, int]:
    """The container's environment as the test runs it, the gRPC and the metrics port."""
    env = {}
    for name, value in env_of(objs).items():
        env[name] = relocate(value, mounts)
        if value.startswith("/"):
            assert env[name] != value, f"{name}={value} is outside every volume mount"
            assert Path(env[name]).is_file(), f"{name}={value}: no such file in its volume"
    port, metrics_port = free_port(), free_port()
    env[ENV_PREFIX + "PORT"] = str(port)
    env[ENV_PREFIX + "METRICS_PORT"] = str(metrics_port)
    # Vault and Secrets Manager are reached only through the recorder, which must stay idle.
    if ENV_PREFIX + "VAULT_ADDR" in env:
        env[ENV_PREFIX + "VAULT_ADDR"] = recorder.url
    if ENV_PREFIX + "AWS_ENDPOINT_URL" in env:
        env[ENV_PREFIX + "AWS_ENDPOINT_URL"] = recorder.url
    annotations = one(objs, "ServiceAccount")["metadata"].get("annotations", {})
    if "eks.amazonaws.com/role-arn" in annotations:
        # What the EKS pod identity webhook adds to the pod for IRSA.
        token = tmp / "aws-iam-token"
        token.write_bytes(service_account_jwt("sts.amazonaws.com"))
        env["AWS_ROLE_ARN"] = annotations["eks.amazonaws.com/role-arn"]
        env["AWS_WEB_IDENTITY_TOKEN_FILE"] = str(token)
        env["AWS_ENDPOINT_URL"] = recorder.url  # STS too
    # What the kubelet gives every container: the API server's Service (the rotation
    # watcher runs by default where it finds them).
    base = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp),
        "LANG": "C.UTF-8",
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": "1",
    }
    return {**base, **env}, port, metrics_port


def health_status(target: str, credentials: Any | None) -> Any:
    channel = (
        grpc.secure_channel(target, credentials)
        if credentials is not None
        else grpc.insecure_channel(target)
    )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status


def wait_serving(
    process: subprocess.Popen[bytes], target: str, credentials: Any | None, log: Path
) -> None:
    deadline = time.monotonic() + 15
    while True:
        assert process.poll() is None, f"server exited {process.returncode}:\n{log.read_text()}"
        try:
            if health_status(target, credentials) == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        assert time.monotonic() < deadline, f"not SERVING after 15 s:\n{log.read_text()}"
        time.sleep(0.1)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_rendered_deployment_starts_the_server(
    config: str,
    rendered: dict[str, list[dict[str, Any]]],
    cluster: Cluster,
    recorder: ConnectionRecorder,
    tmp_path: Path,
) -> None:
    objs = rendered[config]
    spec = pod_spec(objs)
    c = container(objs)
    assert "command" not in c  # the image's entrypoint is extension-server
    mounts = kubelet_mounts(spec, cluster, tmp_path / "volumes")
    env, port, metrics_port = pod_environment(objs, mounts, recorder, tmp_path)
    args = [relocate(arg, mounts) for arg in c["args"]]
    # The port the kubelet's grpc probes ask: the health port with TLS, else the gRPC port.
    (probe_port,) = {c[probe]["grpc"]["port"] for probe in ("readinessProbe", "livenessProbe")}
    health_port = None
    if "--health-port" in args:
        at = args.index("--health-port") + 1
        assert int(args[at]) == probe_port
        assert tls_on(objs)
        health_port = free_port()  # as for the gRPC port: several servers run at once here
        args[at] = str(health_port)
    else:
        assert probe_port == int(env_of(objs)[ENV_PREFIX + "PORT"])

    credentials = None
    if ENV_PREFIX + "TLS_CERT_FILE" in env:
        mtls = ENV_PREFIX + "TLS_CLIENT_CA_FILE" in env
        credentials = grpc.ssl_channel_credentials(
            root_certificates=cluster.server_ca.pem,
            private_key=cluster.client.key if mtls else None,
            certificate_chain=cluster.client.cert if mtls else None,
        )
    stack = contextlib.ExitStack()
    kube: KubeStandIn | None = None
    if config == "rotation":
        # In the pod lightkube reads the mounted token, CA and namespace, and the API server
        # from KUBERNETES_SERVICE_HOST. Here a kubeconfig in $HOME points at the API
        # stand-in, in the namespace the projected volume names. The other configurations
        # with a store find no Kubernetes configuration at all.
        kube = stack.enter_context(KubeStandIn())
        namespace = (mounts[KUBE_API_DIR] / "namespace").read_text()
        kube.kubeconfig(Path(env["HOME"]) / ".kube" / "config", namespace=namespace)
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [EXTENSION_SERVER, *args], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path
        )
    try:
        target = f"127.0.0.1:{port}"
        wait_serving(process, target, credentials, log)
        if credentials is not None:
            # The probes, as the kubelet sends them: plaintext gRPC health, no certificate.
            assert health_port is not None
            probe = f"127.0.0.1:{health_port}"
            assert health_status(probe, None) == health_pb2.HealthCheckResponse.SERVING
            # TLS for real: plaintext is refused, and with mTLS so is a client without a cert.
            with pytest.raises(grpc.RpcError):
                health_status(target, None)
            if ENV_PREFIX + "TLS_CLIENT_CA_FILE" in env:
                anonymous = grpc.ssl_channel_credentials(root_certificates=cluster.server_ca.pem)
                with pytest.raises(grpc.RpcError):
                    health_status(target, anonymous)
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
            assert b"extension_server_backend_requests" in response.read()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
        stack.close()
    output = log.read_text()
    assert code == 0, output
    assert recorder.connections == 0, "the server contacted Vault or AWS while starting"
    started = log_fields(next(line for line in output.splitlines() if "server.started" in line))
    assert started["event"] == "server.started"
    assert started["tls"] == {"tls-mtls": "mtls", "tls": "tls", "cert-manager": "mtls"}.get(
        config, "off"
    )
    assert started["health_port"] == (str(health_port) if health_port else "off")
    assert started["vault"] == (recorder.url if ENV_PREFIX + "VAULT_ADDR" in env else "off")
    assert started["unprotected_listeners"] == env[ENV_PREFIX + "UNPROTECTED_LISTENERS"]
    rotation = [
        fields
        for fields in map(log_fields, output.splitlines())
        if str(fields.get("event", "")).startswith("rotation.")
    ]
    if kube is not None:
        # The watcher runs, and makes no request before a secret it polls has changed.
        assert started["rotation_watcher"] == "on"
        assert [f["event"] for f in rotation] == ["rotation.started"], output
        assert float(rotation[0]["interval_seconds"]) == 45
        assert kube.requests == []
    elif rotation_on(objs):
        # No Kubernetes configuration: the server says so once and serves without a watcher.
        assert started["rotation_watcher"] == "off"
        assert [f["event"] for f in rotation] == ["rotation.disabled"], output
        assert rotation[0]["level"] == "warning"
        assert "no Kubernetes configuration" in rotation[0]["reason"]
    else:
        assert started["rotation_watcher"] == "off"
        assert rotation == [], output


def log_fields(line: str) -> dict[str, Any]:
    """One log line as a mapping: JSON (--log-format json) or logfmt."""
    if line.startswith("{"):
        fields: dict[str, Any] = json.loads(line)
        return fields
    return {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', line)}
