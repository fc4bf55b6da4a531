"""Enabling the hook the way Envoy Gateway is installed: through its own Helm chart.

Envoy Gateway's chart (gateway-helm) renders the envoy-gateway-config ConfigMap from its
values (`config.envoyGateway`). A ConfigMap edited by hand loses what the chart put there,
and loses `extensionManager` again at the next `helm upgrade` of Envoy Gateway. So the
install path gives gateway-helm values instead: docs/examples/envoy-gateway-values.yaml
(plaintext) and docs/examples/envoy-gateway-values-mtls.yaml (mTLS with the certificates
the chart has cert-manager issue), used with `helm upgrade eg ... --reuse-values -f`, and
docs/examples/envoy-gateway-values-translation.yaml, which adds the Translation hook on top
of either.

These tests render Envoy Gateway's real chart (a copy of gateway-helm v1.9 in
../shared/envoy-gateway-chart, read in place) with Helm's own engine (helm-python-sdk),
with and without those values, and check that the rendered configuration calls our hook,
at the address our chart's Service has, with the certificates our chart issues, and that
everything else is what the chart renders without our values. The guide's and the install
notes' Envoy Gateway steps are checked the same way.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.support.charts import deep_merge, manifests
from tests.support.corpus import CORPUS, REQUIRE_SHARED

REPO = Path(__file__).resolve().parent.parent
CHART_DIR = REPO / "charts" / "extension-server"
CRD_FILE = CHART_DIR / "crds" / "listenercontextexamples.example.extensions.io.yaml"
EXAMPLES = REPO / "docs" / "examples"
PLAIN = EXAMPLES / "envoy-gateway-values.yaml"
MTLS = EXAMPLES / "envoy-gateway-values-mtls.yaml"
TRANSLATION = EXAMPLES / "envoy-gateway-values-translation.yaml"
GUIDE = REPO / "docs" / "guide.md"
GATEWAY_HELM = CORPUS.parents[1] / "envoy-gateway-chart" / "gateway-helm"
CONFIG_TEMPLATE = "gateway-helm/templates/envoy-gateway-config.yaml"
GATEWAY_HELM_ADDRESS = "oci://docker.io/envoyproxy/gateway-helm"
NAMESPACE = "envoy-gateway-system"
RELEASE = "extension-server"
# What a user may have set on Envoy Gateway's release before (kept by --reuse-values).
EARLIER_VALUES: dict[str, Any] = {
    "config": {
        "envoyGateway": {
            "logging": {"level": {"default": "debug"}},
            "extensionApis": {"enableBackend": True},
        }
    },
    "deployment": {"replicas": 2},
}


# --- rendering -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway_helm() -> Iterator[helm.Chart]:
    if not (GATEWAY_HELM / "Chart.yaml").is_file():
        reason = f"Envoy Gateway's chart not found at {GATEWAY_HELM} (it sits next to the checkout)"
        if os.environ.get(REQUIRE_SHARED) == "1":
            pytest.fail(f"{reason}; {REQUIRE_SHARED}=1 requires it")
        pytest.skip(reason)
    with helm.Chart.load(GATEWAY_HELM) as chart:
        yield chart


def render_gateway_helm(chart: helm.Chart, values: dict[str, Any] | None) -> dict[str, str]:
    """gateway-helm as `helm install eg ... -n envoy-gateway-system` renders it."""
    return chart.render(values, name="eg", namespace=NAMESPACE, is_install=True)


def envoy_gateway_config(files: dict[str, str]) -> dict[str, Any]:
    """The EnvoyGateway document of the rendered envoy-gateway-config ConfigMap."""
    configmap = yaml.safe_load(files[CONFIG_TEMPLATE])
    assert configmap["metadata"]["name"] == "envoy-gateway-config"
    config: dict[str, Any] = yaml.safe_load(configmap["data"]["envoy-gateway.yaml"])
    return config


def load(path: Path) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(path.read_text())
    return values


def extension_manager(values: dict[str, Any]) -> dict[str, Any]:
    manager: dict[str, Any] = values["config"]["envoyGateway"]["extensionManager"]
    return manager


def our_objects(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART_DIR) as chart:
        files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return manifests(files)


def one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [o for o in objs if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    result: dict[str, Any] = found
    return result


# --- the example values --------------------------------------------------------------------


@pytest.mark.parametrize("example", [PLAIN, MTLS], ids=lambda p: p.name)
@pytest.mark.parametrize("earlier", [None, EARLIER_VALUES], ids=["fresh", "reused"])
def test_example_adds_the_extension_manager_and_changes_nothing_else(
    gateway_helm: helm.Chart, example: Path, earlier: dict[str, Any] | None
) -> None:
    """Given Envoy Gateway's release (with the chart's defaults, or with values a user set
    before), `helm upgrade --reuse-values -f <example>` renders the same objects but for the
    envoy-gateway-config ConfigMap, whose EnvoyGateway document gains `extensionManager`,
    exactly the example's, and keeps every other key as it was."""
    ours = load(example)
    before = render_gateway_helm(gateway_helm, earlier)
    after = render_gateway_helm(gateway_helm, deep_merge(earlier or {}, ours))
    assert set(before) == set(after)
    changed = sorted(path for path in before if before[path] != after[path])
    assert changed == [CONFIG_TEMPLATE]
    config_before, config_after = envoy_gateway_config(before), envoy_gateway_config(after)
    assert "extensionManager" not in config_before
    assert config_after.pop("extensionManager") == extension_manager(ours)
    assert config_after == config_before
    # The ConfigMap's other fields (name, namespace, labels) stay as they were too.
    configmap_before, configmap_after = (
        yaml.safe_load(f[CONFIG_TEMPLATE]) for f in (before, after)
    )
    assert {k: v for k, v in configmap_before.items() if k != "data"} == {
        k: v for k, v in configmap_after.items() if k != "data"
    }
    # What the chart puts there and a hand-written ConfigMap would lose.
    provider = config_after["provider"]["kubernetes"]
    assert provider["shutdownManager"]["image"].startswith("docker.io/envoyproxy/gateway:")
    assert provider["rateLimitDeployment"]["container"]["image"]
    if earlier:
        assert config_after["logging"] == {"level": {"default": "debug"}}
        assert config_after["extensionApis"] == {"enableBackend": True}
    print(
        f"\n{example.name} ({'reused values' if earlier else 'chart defaults'}): "
        f"{len(before)} rendered files, 1 changed ({CONFIG_TEMPLATE}); EnvoyGateway keys "
        f"{sorted(config_before)} kept, extensionManager added"
    )


@pytest.mark.parametrize("example", [PLAIN, MTLS], ids=lambda p: p.name)
def test_example_calls_our_hook_at_our_service(example: Path) -> None:
    """The policy resource is the CRD's, the hook is the listener hook, the host and port are
    those of the Service the chart renders, and an error keeps the previous configuration."""
    manager = extension_manager(load(example))
    crd = yaml.safe_load(CRD_FILE.read_text())
    (version,) = crd["spec"]["versions"]
    assert manager["policyResources"] == [
        {
            "group": crd["spec"]["group"],
            "version": version["name"],
            "kind": crd["spec"]["names"]["kind"],
        }
    ]
    assert manager["hooks"] == {"xdsTranslator": {"post": ["HTTPListener"]}}
    assert manager["failOpen"] is False
    service = one(our_objects(), "Service")
    (port,) = service["spec"]["ports"]
    fqdn = manager["service"]["fqdn"]
    assert fqdn == {
        "hostname": f"{service['metadata']['name']}.{service['metadata']['namespace']}"
        ".svc.cluster.local",
        "port": port["port"],
    }
    assert set(manager) == {"policyResources", "hooks", "service", "failOpen"}
    assert set(manager["service"]) == ({"fqdn", "tls"} if example == MTLS else {"fqdn"})


@pytest.mark.parametrize("base", [PLAIN, MTLS], ids=lambda p: p.name)
@pytest.mark.parametrize("earlier", [None, EARLIER_VALUES], ids=["fresh", "reused"])
def test_translation_example_adds_the_hook_and_its_resources_on_top_of_either_example(
    gateway_helm: helm.Chart, base: Path, earlier: dict[str, Any] | None
) -> None:
    """`helm upgrade --reuse-values -f envoy-gateway-values-translation.yaml` over a release
    that has an example's values: the hooks become HTTPListener and Translation (the
    listener hook stays, so listeners are protected even if the Translation hook receives
    none), listeners and routes are sent to it, and nothing else in the rendered objects
    or in `extensionManager` changes."""
    overlay = load(TRANSLATION)
    reused = deep_merge(earlier or {}, load(base))
    before = render_gateway_helm(gateway_helm, reused)
    after = render_gateway_helm(gateway_helm, deep_merge(reused, overlay))
    assert sorted(path for path in before if before[path] != after[path]) == [CONFIG_TEMPLATE]
    config_before, config_after = envoy_gateway_config(before), envoy_gateway_config(after)
    manager = config_after["extensionManager"]
    assert manager["hooks"] == {"xdsTranslator": {"post": ["HTTPListener", "Translation"]}}
    assert manager.pop("translation") == {
        "listener": {"includeAll": True},
        "route": {"includeAll": True},
    }
    manager["hooks"] = config_before["extensionManager"]["hooks"]
    assert config_after == config_before


def test_mtls_example_names_what_the_chart_and_the_guide_create() -> None:
    """With the guide's cert-manager values, the chart issues Envoy Gateway's client
    certificate into the Secret the example names, in Envoy Gateway's namespace, and a server
    certificate for the host Envoy Gateway calls; the CA Secret the example names is the
    one the guide's CA Certificate writes, and its Issuer is the one the chart is given."""
    tls = extension_manager(load(MTLS))["service"]["tls"]
    guide_values = [c for c in guide_commands() if c.chart == "./charts/extension-server"]
    cert_manager = [c.sets for c in guide_values if "tls.certManager.enabled" in c.sets]
    (sets,) = cert_manager
    issuer = sets["tls.certManager.issuerRef.name"]
    objs = our_objects({"tls": {"certManager": {"enabled": True, "issuerRef": {"name": issuer}}}})
    certificates = {o["spec"]["secretName"]: o for o in objs if o["kind"] == "Certificate"}
    client = certificates[tls["clientCertificateRef"]["name"]]
    assert client["metadata"]["namespace"] == NAMESPACE
    assert "client auth" in client["spec"]["usages"]
    (server,) = [c for c in certificates.values() if c is not client]
    hostname = extension_manager(load(MTLS))["service"]["fqdn"]["hostname"]
    assert hostname in server["spec"]["dnsNames"]
    assert "server auth" in server["spec"]["usages"]
    for certificate in (client, server):
        assert certificate["spec"]["issuerRef"] == {
            "name": issuer,
            "kind": "Issuer",
            "group": "cert-manager.io",
        }
    # The guide's CA: a Certificate writing the CA Secret, and the Issuer signing with it.
    guide_ca = guide_yaml("extension-server-ca.yaml")
    ca_certificate = one(guide_ca, "Certificate")
    assert ca_certificate["spec"]["isCA"] is True
    assert ca_certificate["spec"]["secretName"] == tls["certificateRef"]["name"]
    assert ca_certificate["metadata"]["namespace"] == NAMESPACE
    ca_issuer = one(guide_ca, "Issuer", issuer)
    assert ca_issuer["spec"]["ca"]["secretName"] == tls["certificateRef"]["name"]
    assert ca_issuer["metadata"]["namespace"] == NAMESPACE


def test_network_policy_defaults_select_envoy_gateway_as_gateway_helm_installs_it(
    gateway_helm: helm.Chart,
) -> None:
    """The chart's NetworkPolicy is on by default; its peer (namespace and pod labels) matches
    the pods of Envoy Gateway's Deployment as gateway-helm renders it, and the RBAC subject
    is the ServiceAccount those pods run as."""
    ours = our_objects()
    (rule,) = one(ours, "NetworkPolicy")["spec"]["ingress"]
    (peer,) = rule["from"]
    eg = manifests(render_gateway_helm(gateway_helm, None))
    deployment = one(eg, "Deployment", "envoy-gateway")
    namespace = deployment["metadata"]["namespace"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": namespace}
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert peer["podSelector"]["matchLabels"].items() <= pod_labels.items()
    (subject,) = one(ours, "ClusterRoleBinding", "envoy-gateway-listener-context")["subjects"]
    assert subject == {
        "kind": "ServiceAccount",
        "name": deployment["spec"]["template"]["spec"]["serviceAccountName"],
        "namespace": namespace,
    }
    # No other pod of gateway-helm's carries those labels (the certgen Job's do not).
    pod_templates = [
        o["spec"]["template"]["metadata"].get("labels", {})
        for o in eg
        if o["kind"] in ("Deployment", "Job")
    ]
    matching = [t for t in pod_templates if peer["podSelector"]["matchLabels"].items() <= t.items()]
    assert matching == [pod_labels]


# --- the guide's and the notes' Envoy Gateway steps -----------------------------------------


class HelmLine:
    """One `helm install|upgrade RELEASE CHART ...` line of the guide."""

    def __init__(self, words: list[str]) -> None:
        self.words = words
        positional = [
            word
            for before, word in zip(["", *words[:-1]], words, strict=True)
            if not word.startswith("-")
            and before not in {"-n", "--namespace", "-f", "--values", "--set", "--set-string"}
            and before != "--version"
        ]
        _, self.verb, self.release, self.chart = positional[:4]
        self.flags = words
        self.sets = dict(
            arg.split("=", 1)
            for flag, arg in itertools.pairwise(words)
            if flag in ("--set", "--set-string")
        )

    def value_of(self, flag: str) -> str | None:
        return self.words[self.words.index(flag) + 1] if flag in self.words else None


def shell_blocks(text: str) -> list[str]:
    return [b.replace("\\\n", " ") for b in re.findall(r"```shell\n(.*?)```", text, re.S)]


def guide_commands() -> list[HelmLine]:
    return [
        HelmLine(shlex.split(line, comments=True))
        for block in shell_blocks(GUIDE.read_text())
        for line in block.splitlines()
        if line.startswith(("helm install ", "helm upgrade "))
    ]


def guide_yaml(name: str) -> list[dict[str, Any]]:
    """The objects of the guide's ```yaml block headed `# name`."""
    for block in re.findall(r"```yaml\n(.*?)```", GUIDE.read_text(), re.S):
        if block.startswith(f"# {name}\n"):
            return [doc for doc in yaml.safe_load_all(block) if doc]
    raise AssertionError(f"no yaml block {name} in {GUIDE}")


def test_guide_configures_envoy_gateway_through_its_chart(gateway_helm: helm.Chart) -> None:
    """Each Envoy Gateway step of the guide is a `helm upgrade` of gateway-helm with
    --reuse-values and one of the example files, at the chart's address and version; the
    guide hands no envoy-gateway-config ConfigMap to kubectl."""
    upgrades = [c for c in guide_commands() if c.chart == GATEWAY_HELM_ADDRESS]
    files = [Path(c.value_of("-f") or "").name for c in upgrades]
    assert files == [PLAIN.name, MTLS.name, TRANSLATION.name]
    version = gateway_helm.metadata["version"]
    for command in upgrades:
        assert (command.verb, command.release) == ("upgrade", "eg")
        assert "--reuse-values" in command.flags
        assert command.value_of("-n") == NAMESPACE
        assert command.value_of("--version") == version
        values = load(REPO / (command.value_of("-f") or ""))
        if Path(command.value_of("-f") or "").name == TRANSLATION.name:
            values = deep_merge(load(PLAIN), values)  # on top of the first step's values
        config = envoy_gateway_config(render_gateway_helm(gateway_helm, values))
        assert config["extensionManager"] == extension_manager(values)
    text = GUIDE.read_text()
    assert not re.search(r"kind: ConfigMap\s+metadata:\s+name: envoy-gateway-config", text)
    assert "Do not edit `envoy-gateway-config` by hand" in text


def notes(values: dict[str, Any] | None) -> str:
    with helm.Chart.load(CHART_DIR) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return rendered["extension-server/templates/NOTES.txt"]


def notes_values(text: str) -> dict[str, Any]:
    heredoc = re.search(r"cat > envoy-gateway-values.yaml <<'EOF'\n(.*?)\n\s*EOF\n", text, re.S)
    assert heredoc, text
    values: dict[str, Any] = yaml.safe_load(textwrap.dedent(heredoc.group(1)))
    return values


CERT_MANAGER = {"tls": {"certManager": {"enabled": True, "issuerRef": {"name": "es-ca"}}}}


@pytest.mark.parametrize(
    ("values", "example"),
    [(None, PLAIN), (CERT_MANAGER, MTLS)],
    ids=["plaintext", "cert-manager"],
)
def test_notes_give_the_gateway_helm_values(
    gateway_helm: helm.Chart, values: dict[str, Any] | None, example: Path
) -> None:
    """The install notes print the example's values, with this release's Service filled in
    (and, with cert-manager, the client Secret; the CA Secret is left for the user to
    name), and the `helm upgrade` of Envoy Gateway that applies them."""
    text = notes(values)
    printed = notes_values(text)
    expected = extension_manager(load(example))
    manager = extension_manager(printed)
    if example == MTLS:
        assert manager["service"]["tls"]["certificateRef"] == {"name": "<ca-secret>"}
        manager["service"]["tls"]["certificateRef"] = expected["service"]["tls"]["certificateRef"]
    assert manager == expected
    config = envoy_gateway_config(render_gateway_helm(gateway_helm, printed))
    assert config["extensionManager"]["service"]["fqdn"] == expected["service"]["fqdn"]
    (upgrade,) = [line for line in text.splitlines() if "helm upgrade eg" in line]
    words = shlex.split(upgrade)
    assert GATEWAY_HELM_ADDRESS in words and "--reuse-values" in words
    assert words[words.index("-f") + 1] == "envoy-gateway-values.yaml"
    assert "Do not edit the envoy-gateway-config ConfigMap by hand" in text
    assert "kubectl apply" not in text


def test_notes_follow_the_service_and_envoy_gateway_namespace() -> None:
    text = notes(
        {"service": {"name": "auth-hook", "port": 7000}, "envoyGateway": {"namespace": "eg"}}
    )
    fqdn = extension_manager(notes_values(text))["service"]["fqdn"]
    assert fqdn == {"hostname": f"auth-hook.{NAMESPACE}.svc.cluster.local", "port": 7000}
    assert "-n eg --reuse-values" in text


# --- what the guide asks a user to type ------------------------------------------------------

# Ways a password (or a token) ends up in a command's arguments, where the shell history
# and the process list keep it.
PASSWORD_ON_A_COMMAND_LINE = [
    re.compile(r"(--user|-u)\s+['\"]?[^\s'\"]+:"),  # curl --user name:password
    re.compile(r"\bpassword=(?![@-])"),  # vault kv put ... password=<value>
    re.compile(r"--secret-string\s+(?!file://)"),  # aws secretsmanager ... --secret-string <v>
    re.compile(r"--from-literal"),  # kubectl create secret ... --from-literal=k=<value>
    re.compile(r"<<\s*'?EOF'?[^`]*password:", re.S),  # a heredoc with a password in it
]


def test_guide_puts_no_password_on_a_command_line() -> None:
    blocks = shell_blocks(GUIDE.read_text())
    console = re.findall(r"```console\n(.*?)```", GUIDE.read_text(), re.S)
    typed = [*blocks, *(line for b in console for line in b.splitlines() if line.startswith("$"))]
    found = [(p.pattern, t) for p in PASSWORD_ON_A_COMMAND_LINE for t in typed if p.search(t)]
    assert found == []
    # The patterns do catch the commands the guide used to show.
    for old in (
        "curl http://x --user 'user:p@ssw0rd'",
        "vault kv put secret/gateways/default/eg password='a-long-random-password'",
        "aws secretsmanager create-secret --name gateways/default/eg --secret-string 'pw'",
        "kubectl apply -f - << EOF\nkind: ListenerContextExample\n  password: p@ssw0rd\nEOF",
    ):
        assert any(p.search(old) for p in PASSWORD_ON_A_COMMAND_LINE), old


def test_guide_creates_every_secret_it_uses() -> None:
    """A Secret named in a chart value the guide sets is created in an earlier step (by
    kubectl, or by cert-manager from a Certificate of the guide); Vault outside dev mode gets
    its KV v2 engine at secret/ before the first `vault kv put`."""
    text = GUIDE.read_text()
    created: dict[str, int] = {}
    for match in re.finditer(r"kubectl (?:-n \S+ )?create secret \S+ (\S+)", text):
        created.setdefault(match.group(1), match.start())
    for block in re.finditer(r"```yaml\n(.*?)```", text, re.S):
        for doc in yaml.safe_load_all(block.group(1)):
            if isinstance(doc, dict) and doc.get("kind") == "Certificate":
                created.setdefault(doc["spec"]["secretName"], block.start())
    used = [(m.group(1), m.start()) for m in re.finditer(r"--set \S*secretName=(\S+)", text)]
    assert used, "the guide sets no Secret name: the check would prove nothing"
    for name, where in used:
        assert name in created and created[name] < where, name
    enable = text.index("vault secrets enable -path=secret kv-v2")
    assert enable < text.index("vault kv put")
