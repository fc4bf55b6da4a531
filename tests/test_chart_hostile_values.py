"""No chart value can add to the rendered manifests.

Every string value that reaches a template (found by walking values.schema.json, so a new
value is covered as soon as the schema has it) is rendered with hostile strings: newlines,
YAML indicators (`: `, `{`, `[`, `- `, `#`, `&`, `*`, `!`, `|`), quotes, document
markers, template text, words YAML reads as other types (`true`, `null`, `123`), Unicode
line breaks, a NUL and a very long string. Each must be refused by the schema (the pattern
of what the value really is: an image tag, a DNS-1123 name, ...) or end up as that very
string, one scalar, in the rendered objects: the same objects with the same fields as
with a harmless value, only that scalar changed. Map values (labels, annotations) are
tried both as a value and as a key.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

CHART_DIR = Path(__file__).resolve().parent.parent / "charts" / "extension-server"
RELEASE = "extension-server"
NAMESPACE = "envoy-gateway-system"

HOSTILE: list[str] = [
    "x\ninjected: true",
    "x\n  hostNetwork: true",
    "x: y",
    "{a: b}",
    "[a, b]",
    "- item",
    "x # comment",
    '"quoted"',
    "'single'",
    'x" injected: "y',
    "---\nkind: Secret",
    "...",
    "&anchor x",
    "*alias",
    "!!binary aGk=",
    "|\n  block",
    "x\r\ny",
    "\t",
    "{{ .Release.Name }}",
    "%s%d",
    "true",
    "null",
    "~",
    "123",
    "1e3",
    "a\u2028b",
    "a\x85b",
    "a\x00b",
    "a" * 10_000,
]

# The key under which map values (labels, annotations) are tried, and a harmless value.
MAP_KEY = "example.com/checked"
HARMLESS = "checked"

# The values under which each group of string values reaches a template.
CONTEXTS: dict[str, dict[str, Any]] = {
    "defaults": {"imagePullSecrets": [{"name": "regcred"}]},
    "pdb": {"podDisruptionBudget": {"enabled": True, "minAvailable": "50%"}},
    "tls": {"tls": {"enabled": True, "secretName": "es-tls", "clientCA": {"secretName": "eg-ca"}}},
    "cert-manager": {"tls": {"certManager": {"enabled": True, "issuerRef": {"name": "es-ca"}}}},
    "vault-kubernetes": {
        "vault": {
            "addr": "https://vault.example:8200",
            "auth": "kubernetes",
            "role": "extension-server",
            "namespace": "team-gw",
            "authMount": "kubernetes-eg",
            "caCert": {"secretName": "vault-ca"},
        }
    },
    "vault-token": {
        "vault": {
            "addr": "https://vault.example:8200",
            "token": {"secretName": "vault-token"},
            "caCert": {"configMapName": "vault-ca"},
        },
        "rotation": {"pollInterval": "45s"},
    },
    "vault-approle": {
        "vault": {
            "addr": "https://vault.example:8200",
            "auth": "approle",
            "approle": {"roleId": "4f1e-role-id", "secretId": {"secretName": "approle"}},
        }
    },
    "aws": {
        "aws": {
            "region": "eu-west-1",
            "endpointUrl": "https://secretsmanager.example",
            "roleArn": "arn:aws:iam::123456789012:role/reader",
        }
    },
    "prometheus-rule": {"prometheusRule": {"enabled": True}},
}
# Longest prefix first wins; everything else renders in "defaults".
CONTEXT_OF_PREFIX: dict[str, str] = {
    "podDisruptionBudget": "pdb",
    "tls.secretName": "tls",
    "tls.clientCA": "tls",
    "tls.certManager": "cert-manager",
    "clusterDomain": "cert-manager",
    "vault.caCert.configMapName": "vault-token",
    "vault.token": "vault-token",
    "rotation": "vault-token",
    "vault.approle": "vault-approle",
    "vault": "vault-kubernetes",
    "aws": "aws",
    "prometheusRule": "prometheus-rule",
}


@dataclass(frozen=True)
class Slot:
    """Where a hostile string goes: a value at `path`, or (as_key) a key of the map there."""

    path: tuple[str | int, ...]
    as_key: bool = False

    @property
    def name(self) -> str:
        dotted = ".".join(str(p) for p in self.path)
        return f"{dotted}{' (key)' if self.as_key else ''}"

    @property
    def context(self) -> str:
        dotted = ".".join(str(p) for p in self.path if isinstance(p, str))
        prefixes = [p for p in CONTEXT_OF_PREFIX if dotted == p or dotted.startswith(p + ".")]
        return CONTEXT_OF_PREFIX[max(prefixes, key=len)] if prefixes else "defaults"


def string_slots(schema: dict[str, Any], path: tuple[str | int, ...] = ()) -> Iterator[Slot]:
    """Every place values.schema.json lets a string go."""
    branches = schema.get("anyOf", [schema])
    if any(b.get("type") == "string" for b in branches):
        yield Slot(path)
    if schema.get("type") == "object":
        for key, sub in schema.get("properties", {}).items():
            yield from string_slots(sub, (*path, key))
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and extra.get("type") == "string":
            yield Slot((*path, MAP_KEY))
            yield Slot((*path, MAP_KEY), as_key=True)
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        yield from string_slots(schema["items"], (*path, 0))


SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())
SLOTS = list(string_slots(SCHEMA))


def values_with(slot: Slot, text: str) -> dict[str, Any]:
    """The slot's context, with `text` at the slot (a harmless value under it for a key)."""
    values: Any = json.loads(json.dumps(CONTEXTS[slot.context]))
    node = values
    *parents, last = slot.path
    for step, after in zip(parents, slot.path[1:], strict=True):
        if isinstance(step, int):
            while len(node) <= step:
                node.append({})
        elif step not in node:
            node[step] = [] if isinstance(after, int) else {}
        node = node[step]
    if slot.as_key:
        node[text] = HARMLESS
    else:
        node[last] = text
    result: dict[str, Any] = values
    return result


def harmless_value(slot: Slot) -> Any:
    """What the slot holds in its context (or by default), else a harmless string."""
    node: Any = CONTEXTS[slot.context]
    defaults: Any = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    for source in (node, defaults):
        found = source
        for step in slot.path:
            try:
                found = found[step]
            except (KeyError, IndexError, TypeError):
                found = None
                break
        if found not in (None, ""):
            return found
    return HARMLESS


Leaves = dict[tuple[Any, ...], Any]


def leaves(value: Any, path: tuple[Any, ...]) -> Leaves:
    if isinstance(value, dict):
        return {k: v for key, sub in value.items() for k, v in leaves(sub, (*path, key)).items()}
    if isinstance(value, list):
        return {k: v for i, sub in enumerate(value) for k, v in leaves(sub, (*path, i)).items()}
    return {path: value}


def rendered_leaves(chart: helm.Chart, values: dict[str, Any]) -> Leaves:
    """Every scalar of every rendered object, by (file, document, path) (NOTES excluded)."""
    files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    found: Leaves = {}
    for file, text in sorted(files.items()):
        if file.endswith(".yaml"):
            for index, doc in enumerate(d for d in yaml.safe_load_all(text) if d):
                found.update(leaves(doc, (file, index)))
    return found


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def test_every_string_value_is_tried() -> None:
    """The walk finds the values issue reports named, and each context is used."""
    names = {slot.name for slot in SLOTS}
    for name in (
        "image.tag",
        "serviceAccount.name",
        "envoyGateway.serviceAccountName",
        "imagePullSecrets.0.name",
        "podAnnotations.example.com/checked (key)",
        "tls.certManager.issuerRef.name",
        "prometheusRule.labels.example.com/checked",
    ):
        assert name in names, name
    assert {slot.context for slot in SLOTS} == set(CONTEXTS)


def refused_or_one_scalar(chart: helm.Chart, slot: Slot) -> tuple[int, int]:
    """How many hostile strings the schema refuses at the slot, and how many render as one
    scalar; any other outcome fails."""
    harmless = MAP_KEY if slot.as_key else harmless_value(slot)
    baseline = rendered_leaves(chart, values_with(slot, harmless))
    refused, rendered = 0, 0
    for text in HOSTILE:
        try:
            found = rendered_leaves(chart, values_with(slot, text))
        except helm.HelmValuesError:
            refused += 1
            continue
        except yaml.YAMLError as error:
            raise AssertionError(f"{slot.name}: {text!r} breaks the manifest: {error}") from None
        rendered += 1
        if slot.as_key:
            # The key itself is the one change: the same fields, under that key.
            expected = {
                tuple(text if step == MAP_KEY else step for step in path): value
                for path, value in baseline.items()
            }
            assert found == expected, (slot.name, text)
            assert any(text in path for path in found), (slot.name, text)
            continue
        # The same objects with the same fields; what changed holds the string, as a string.
        assert found.keys() == baseline.keys(), (slot.name, text, found.keys() ^ baseline.keys())
        changed = {path: value for path, value in found.items() if baseline[path] != value}
        assert changed, f"{slot.name}: {text!r} reaches no rendered object in {slot.context}"
        for path, value in changed.items():
            assert isinstance(value, str) and text in value, (slot.name, text, path, value)
    return refused, rendered


@pytest.mark.parametrize("slot", SLOTS, ids=[s.name for s in SLOTS])
def test_hostile_string_is_refused_or_one_scalar(chart: helm.Chart, slot: Slot) -> None:
    refused, rendered = refused_or_one_scalar(chart, slot)
    print(f"\n{slot.name} [{slot.context}]: {refused} refused by the schema, {rendered} one scalar")
    assert refused + rendered == len(HOSTILE)


@pytest.mark.parametrize(
    ("slot", "template", "safe", "unsafe"),
    [
        (
            Slot(("image", "tag")),
            "deployment.yaml",
            '{{ printf "%s:%s" .Values.image.repository .Values.image.tag | quote }}',
            '"{{ .Values.image.repository }}:{{ .Values.image.tag }}"',
        ),
        (
            Slot(("serviceAccount", "name")),
            "deployment.yaml",
            '{{ include "extension-server.serviceAccountName" . | quote }}',
            '{{ include "extension-server.serviceAccountName" . }}',
        ),
        (
            Slot(("podAnnotations", MAP_KEY)),
            "_helpers.tpl",
            '{{- include "extension-server.stringMap" $annotations }}',
            "{{- toYaml $annotations }}",
        ),
    ],
    ids=["image.tag", "serviceAccount.name", "podAnnotations"],
)
def test_the_check_catches_an_unquoted_value_without_a_pattern(
    tmp_path: Path, slot: Slot, template: str, safe: str, unsafe: str
) -> None:
    """Negative control: the chart as it was (the value rendered unquoted, and no schema to
    refuse it) fails the check."""
    copy = tmp_path / "extension-server"
    shutil.copytree(CHART_DIR, copy)
    (copy / "values.schema.json").unlink()
    path = copy / "templates" / template
    text = path.read_text()
    assert text.count(safe) == 1
    path.write_text(text.replace(safe, unsafe))
    with helm.Chart.load(copy) as unsafe_chart, pytest.raises(AssertionError):
        refused_or_one_scalar(unsafe_chart, slot)
