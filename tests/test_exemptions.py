"""Exemptions as a policy author writes them and as Envoy will decide them.

Given `spec.exemptions` in a policy, the parser learns what is wrong with each entry (and
the CRD says the same); given usable exemptions, the predicate Envoy evaluates admits a
request without credentials only when its path, as the router and the backend see it, is
inside one exemption's Gateway API match, with an allowed method. That promise is checked
here with hypothesis over generated exemption sets and request paths (path tricks and
random text included), through a Python model of the emitted matcher
(tests/support/matcher_model.py); tests/test_request_control_envoy.py shows the real Envoy
agrees with the model on a sample.
"""

from __future__ import annotations

from typing import Any

import pytest
import re2  # type: ignore[import-untyped]
import yaml
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.exemptions import (
    CRD_SCHEMA,
    MAX_EXEMPTIONS,
    METHODS,
    PLAIN_REQUEST_PATH,
    Exemption,
    exempt_predicate,
    filters_see_the_forwarded_path,
    read_exemptions,
)
from compiler.listener import ChainAuth, basic_auth_filter
from compiler.matching import skip_when, unwrap
from compiler.virtual_hosts import GatewayListener
from tests.support.charts import CHART_DIR, python_validator
from tests.support.exemption_strategies import (
    METHOD_SAMPLE,
    exemption_sets,
    gateways,
    requests_near,
    values,
)
from tests.support.matcher_model import Request, promise_holds, skips

EXAMPLES = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
OUR_FILTER = basic_auth_filter(ChainAuth("# nobody\n", "X-Example-Ext"))
HEALTHZ = Exemption("PathPrefix", "/healthz")
READY = Exemption("Exact", "/.well-known/ready", ("GET", "HEAD"))


def exempt(exemptions: list[Exemption], path: str, method: str = "GET", **request: Any) -> bool:
    wrapped = skip_when(OUR_FILTER, exempt_predicate(exemptions, request.pop("per_gateway", None)))
    return skips(wrapped, Request(path, method, **request))


# --- what the author writes -------------------------------------------------------------------


def test_the_issue_example_reads_as_two_exemptions() -> None:
    spec = [
        {"path": {"type": "PathPrefix", "value": "/healthz"}},
        {"path": {"type": "Exact", "value": "/.well-known/ready"}, "methods": ["GET", "HEAD"]},
    ]
    assert read_exemptions(spec) == ((HEALTHZ, READY), [])
    assert read_exemptions(None) == ((), [])


@pytest.mark.parametrize(
    ("entry", "field", "words"),
    [
        ({"path": {"type": "Exact", "value": "healthz"}}, "path.value", "not an absolute path"),
        ({"path": {"type": "Exact", "value": ""}}, "path.value", "is empty"),
        ({"path": {"type": "Exact", "value": "/a?b=1"}}, "path.value", "query"),
        ({"path": {"type": "Exact", "value": "/a#b"}}, "path.value", "fragment"),
        ({"path": {"type": "Exact", "value": "/a%20b"}}, "path.value", "percent-encoded"),
        ({"path": {"type": "Exact", "value": "/a//b"}}, "path.value", "empty segment"),
        ({"path": {"type": "PathPrefix", "value": "/a/../b"}}, "path.value", "'..'"),
        ({"path": {"type": "PathPrefix", "value": "/a/."}}, "path.value", "'.'"),
        ({"path": {"type": "Exact", "value": "/a;b"}}, "path.value", "';'"),
        ({"path": {"type": "Exact", "value": "/a\\b"}}, "path.value", "'\\\\'"),
        ({"path": {"type": "Exact", "value": "/é"}}, "path.value", "'\\xe9'"),
        ({"path": {"type": "Exact", "value": "/" + "a" * 1024}}, "path.value", "1025 characters"),
        (
            {"path": {"type": "RegularExpression", "value": "/a"}},
            "path.type",
            "Exact or PathPrefix",
        ),
        ({"path": {"type": "Exact", "value": 7}}, "path.value", "not a string"),
        ({"path": {"type": "Exact"}}, "path.value", "not a string"),
        ({"path": "/a"}, "path", "not {type, value}"),
        ({"path": {"type": "Exact", "value": "/a"}, "method": ["GET"]}, "", "unknown fields"),
        ({"path": {"type": "Exact", "value": "/a"}, "methods": ["get"]}, "methods", "upper case"),
        ({"path": {"type": "Exact", "value": "/a"}, "methods": ["FETCH"]}, "methods", "unknown"),
        ({"path": {"type": "Exact", "value": "/a"}, "methods": ["GET", "GET"]}, "methods", "twice"),
        ({"path": {"type": "Exact", "value": "/a"}, "methods": []}, "methods", "is empty"),
        ({"path": {"type": "Exact", "value": "/a"}, "methods": "GET"}, "methods", "not a list"),
        ("/a", "", "not an object"),
    ],
)
def test_the_author_learns_what_is_wrong_with_an_exemption(
    entry: Any, field: str, words: str
) -> None:
    exemptions, problems = read_exemptions([{"path": {"type": "Exact", "value": "/ok"}}, entry])
    assert exemptions == (Exemption("Exact", "/ok"),)
    assert [p.field for p in problems] == [f"spec.exemptions[1]{'.' + field if field else ''}"]
    assert words in problems[0].problem, problems[0]
    assert problems[0].fix


def test_too_many_exemptions_and_a_non_list_are_problems() -> None:
    many = [{"path": {"type": "Exact", "value": f"/p{i}"}} for i in range(MAX_EXEMPTIONS + 1)]
    exemptions, problems = read_exemptions(many)
    assert len(exemptions) == MAX_EXEMPTIONS
    assert [str(p) for p in problems] == [
        f"spec.exemptions: lists {MAX_EXEMPTIONS + 1} exemptions; list at most {MAX_EXEMPTIONS}"
    ]
    assert read_exemptions({"path": "/a"})[1][0].problem == "is not a list"


path_values = st.one_of(
    st.sampled_from(["/", "/healthz", "/healthz/", "/.well-known/ready", "/a/...", "/a.b/c~d"]),
    st.text(alphabet="/.ab%;?#\\é -~:@!", max_size=12),
    st.text(max_size=8),
)
entries = st.fixed_dictionaries(
    {"path": st.fixed_dictionaries({"type": st.sampled_from(["Exact", "PathPrefix", "exact"]),
                                    "value": path_values})},
    optional={"methods": st.lists(st.sampled_from([*METHODS, "get", "FOO"]), max_size=3)},
)  # fmt: skip


@EXAMPLES
@given(entries)
def test_the_crd_schema_accepts_exactly_what_the_parser_accepts(entry: dict[str, Any]) -> None:
    methods = entry.get("methods", [])
    crd_accepts = not list(python_validator(CRD_SCHEMA).iter_errors([entry])) and len(
        set(methods)
    ) == len(methods)  # x-kubernetes-list-type: set
    assert crd_accepts == (read_exemptions([entry])[1] == [])


def test_the_one_regular_expression_fits_envoys_program_size_limit() -> None:
    assert re2.compile(PLAIN_REQUEST_PATH).programsize <= 100  # Envoy's default error level


@EXAMPLES
@given(st.text(alphabet="/.a%;?#\\é:", max_size=16) | st.text(max_size=16))
def test_python_and_re2_read_the_regular_expression_alike(path: str) -> None:
    python = Request(path).path if exempt([Exemption("PathPrefix", "/")], path) else None
    assert (python is not None) == (re2.fullmatch(PLAIN_REQUEST_PATH, path) is not None)


# --- what Envoy decides -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "method", "expected"),
    [
        ("/healthz", "GET", True),
        ("/healthz/", "POST", True),
        ("/healthz/live", "GET", True),
        ("/healthz?verbose=1", "GET", True),
        ("/healthz?next=/../admin", "GET", True),  # the query is not the path
        ("/healthzX", "GET", False),
        ("/HEALTHZ", "GET", False),
        ("/healthz/../admin", "GET", False),
        ("/healthz/./live", "GET", False),
        ("/healthz//live", "GET", False),
        ("//healthz", "GET", False),
        ("/healthz/%2e%2e/admin", "GET", False),
        ("/healthz%2F..%2Fadmin", "GET", False),
        ("/healthz\\..\\admin", "GET", False),
        ("/healthz;x=1/../admin", "GET", False),
        ("/healthz/..;/admin", "GET", False),
        ("/healthz#x", "GET", False),
        ("/.well-known/ready", "GET", True),
        ("/.well-known/ready", "HEAD", True),
        ("/.well-known/ready", "POST", False),
        ("/.well-known/ready?probe=1", "GET", True),
        ("/.well-known/ready/", "GET", False),
        ("/.well-known/readyz", "GET", False),
        ("/admin", "GET", False),
    ],
)
def test_only_plain_paths_inside_an_exemption_are_exempt(
    path: str, method: str, expected: bool
) -> None:
    assert exempt([HEALTHZ, READY], path, method) is expected


def test_nothing_exempt_means_the_filter_is_not_wrapped() -> None:
    assert exempt_predicate([]) is None
    assert exempt_predicate([], {GatewayListener("a", "gw"): []}) is None
    assert skip_when(OUR_FILTER, None) == OUR_FILTER
    assert unwrap(OUR_FILTER) == (OUR_FILTER, None)


def test_the_predicate_does_not_depend_on_the_order_of_exemptions_or_duplicates() -> None:
    assert exempt_predicate([HEALTHZ, READY]) == exempt_predicate([READY, HEALTHZ, READY])


def test_a_trailing_slash_in_a_prefix_is_ignored_and_the_root_prefix_admits_plain_paths() -> None:
    assert exempt([Exemption("PathPrefix", "/healthz/")], "/healthz")
    assert exempt([Exemption("PathPrefix", "/")], "/any/plain/path?q")
    assert not exempt([Exemption("PathPrefix", "/")], "/any/../path")


def test_each_gateways_exemptions_apply_on_its_own_virtual_hosts_only() -> None:
    team_a, team_b = GatewayListener("team-a", "gw"), GatewayListener("team-b", "gw")
    per_gateway = {team_a: [HEALTHZ], GatewayListener("team-b", "gw", "http"): [READY]}
    assert exempt([], "/healthz", per_gateway=per_gateway, virtual_host_of=team_a)
    assert exempt([], "/healthz", per_gateway=per_gateway, virtual_host_of=team_a.gateway())
    assert not exempt([], "/healthz", per_gateway=per_gateway, virtual_host_of=team_b)
    assert not exempt([], "/healthz", per_gateway=per_gateway, virtual_host_of=None)
    assert exempt(
        [], "/.well-known/ready", per_gateway=per_gateway,
        virtual_host_of=GatewayListener("team-b", "gw", "http"),
    )  # fmt: skip
    assert not exempt(
        [], "/.well-known/ready", per_gateway=per_gateway,
        virtual_host_of=GatewayListener("team-b", "gw", "https"),
    )  # fmt: skip


# --- the promise, over generated exemptions and requests ---------------------------------------


@EXAMPLES
@given(st.data())
def test_an_exempt_request_is_always_inside_an_exemption(data: st.DataObject) -> None:
    exemptions = data.draw(exemption_sets)
    path, method = data.draw(requests_near(exemptions)), data.draw(METHOD_SAMPLE)
    if exempt(exemptions, path, method):
        assert promise_holds(exemptions, path, method)


@EXAMPLES
@given(st.data())
def test_every_plain_request_inside_an_exemption_is_exempt(data: st.DataObject) -> None:
    exemptions = data.draw(exemption_sets)
    chosen = data.draw(st.sampled_from(exemptions))
    path = chosen.value
    if chosen.path_type == "PathPrefix":
        path = (path.rstrip("/") + data.draw(st.sampled_from(["", "/"]) | values)) or "/"
    path += data.draw(st.sampled_from(["", "?", "?a=b&c=/../d"]))
    method = data.draw(st.sampled_from(chosen.methods or METHODS))
    assert exempt(exemptions, path, method)


@EXAMPLES
@given(st.data())
def test_an_exempt_request_is_inside_an_exemption_of_its_own_gateway(data: st.DataObject) -> None:
    per_gateway = data.draw(st.dictionaries(gateways, exemption_sets, min_size=1, max_size=3))
    everything = [e for own in per_gateway.values() for e in own]
    path, method = data.draw(requests_near(everything)), data.draw(METHOD_SAMPLE)
    host = data.draw(st.none() | gateways)
    if exempt([], path, method, per_gateway=per_gateway, virtual_host_of=host):
        assert host is not None
        own = [
            e
            for listener, its in per_gateway.items()
            if listener.gateway() == host.gateway() and listener.section in (None, host.section)
            for e in its
        ]
        assert promise_holds(own, path, method)


def test_a_manager_that_normalises_the_path_for_filters_only_gets_no_exemption() -> None:
    manager = hcm_pb2.HttpConnectionManager()
    assert filters_see_the_forwarded_path(manager)
    transformation = manager.path_normalization_options.http_filter_transformation
    transformation.operations.add().normalize_path_rfc_3986.SetInParent()
    assert not filters_see_the_forwarded_path(manager)


CRD_FILE = "listenercontextexamples.example.extensions.io.yaml"


def test_the_crd_states_the_parsers_rules_for_exemptions_and_hidden_credentials() -> None:
    """The chart's CRD holds CRD_SCHEMA under spec.exemptions (descriptions aside), and
    hideCredentials as a boolean: the API server refuses what the parser refuses."""
    crd = yaml.safe_load((CHART_DIR / "crds" / CRD_FILE).read_text())
    (version,) = crd["spec"]["versions"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert without_descriptions(spec["exemptions"]) == CRD_SCHEMA
    assert without_descriptions(spec["hideCredentials"]) == {"type": "boolean"}


def without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: without_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [without_descriptions(item) for item in node]
    return node
