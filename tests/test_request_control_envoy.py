"""Exemptions, hidden credentials and per-virtual-host users, as a real Envoy runs them.

Every new shape is validated by every Envoy a supported Envoy Gateway runs (1.36 to 1.40);
the behaviour runs on the oldest and the newest, each with an echo backend, listeners
published from a file as Envoy Gateway would push them (tests/support/request_control.py):

- exempt and non-exempt paths, with and without credentials, every path trick, methods,
  under Envoy Gateway's path normalisation, a ClientTrafficPolicy's, and none at all;
- what the backend receives with and without hidden credentials, a Bearer token on an
  exempt path, a username header a client made up;
- two merged Gateways of two namespaces on one plain-HTTP port, their route table inline:
  each user admitted on its own Gateway's virtual hosts only, each Gateway's exemptions
  and credential removal on its own virtual hosts only;
- generated exemption sets and request targets (random bytes too): Envoy exempts exactly
  what the matcher model says, and only paths inside an exemption.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import config_source_pb2
from envoy.config.route.v3 import route_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.exemptions import Exemption, exempt_predicate
from compiler.listener import FILTER_NAME, ChainAuth, basic_auth_filter
from compiler.matching import header_is, skip_when
from compiler.model import CompileOptions, UnprotectedMode
from compiler.routes import with_gateway_users
from compiler.virtual_hosts import GatewayListener
from server.api import extension_pb2 as api
from server.api import extension_pb2_grpc as api_grpc
from server.app import ServerSettings
from server.demo.echo import EchoBackend
from server.demo.envoy import EnvoyProcess, free_port
from server.demo.story import basic
from tests.support.builders import (
    as_http3,
    eg_security_filters,
    http_listener,
    https_listener,
    policy,
)
from tests.support.envoys import (
    ENVOY_RELEASES,
    EnvoyRelease,
    envoy_binary,
    every_envoy,
    validate_with,
)
from tests.support.exemption_strategies import exemption_sets, requests_near
from tests.support.hook import hook_server
from tests.support.matcher_model import Request, promise_holds, skips
from tests.support.request_control import (
    NORMALISATION,
    USER_HEADER,
    edit_managers,
    eg_listener,
    protect,
    send,
    virtual_host,
)
from tests.support.secrets import remember, sha

PASSWORD = "s3cret-user"
USERS = f"user:{sha(PASSWORD)}\n"
HEALTHZ = Exemption("PathPrefix", "/healthz")
READY = Exemption("Exact", "/.well-known/ready", ("GET", "HEAD"))
TEAM_A = GatewayListener("team-a", "gw-a", "http")
TEAM_B = GatewayListener("team-b", "gw-b", "http")
remember(PASSWORD, "alice-s3cret", "bob-s3cret", "wrong-password")
OUR_FILTER = basic_auth_filter(ChainAuth(USERS, USER_HEADER))


# --- every Envoy accepts every shape ----------------------------------------------------------


def merged_routes() -> Any:
    """Two Gateways' virtual hosts and one without Envoy Gateway's metadata, each with the
    users of its own Gateway."""
    hosts = [
        virtual_host("a", ["a.example"], "backend", TEAM_A),
        virtual_host("b", ["b.example"], "backend", TEAM_B),
        virtual_host("c", ["*"], "backend"),
    ]
    tables = {TEAM_A: f"alice:{sha('alice-s3cret')}\n", TEAM_B: f"bob:{sha('bob-s3cret')}\n"}
    routes = route_pb2.RouteConfiguration(name="default/eg/http", virtual_hosts=hosts)
    return with_gateway_users(routes, tables.get)


def eg_security_filters_every_envoy_takes() -> list[Any]:
    """Envoy Gateway's SecurityPolicy filters but oauth2, whose listener-level placeholder
    only Envoy 1.38 and later take (test_envoy_accepts.py has each release's form)."""
    return [f for f in eg_security_filters() if not f.name.startswith("envoy.filters.http.oauth2")]


def speak_http3(manager: Any) -> None:
    manager.codec_type = manager.HTTP3
    manager.http3_protocol_options.SetInParent()


def every_shape() -> list[Any]:
    """Each new shape: on Envoy Gateway's listener forms (HTTP with its SecurityPolicy
    filters, HTTPS chains, HTTP/3, an inline route table with per-virtual-host users)."""
    per_gateway = {TEAM_A: [HEALTHZ], TEAM_B.gateway(): [READY, Exemption("PathPrefix", "/")]}
    variants: list[dict[str, Any]] = [
        {"exemptions": [HEALTHZ, READY]},
        {"exemptions": [HEALTHZ], "hide": True},
        {"hide": True},
        {"per_gateway": per_gateway, "hide": [TEAM_A]},
        {"exemptions": [READY], "per_gateway": per_gateway, "hide": [TEAM_A, TEAM_B]},
    ]
    bases = [
        http_listener(*eg_security_filters_every_envoy_takes()),
        https_listener("a", "b"),
        edit_managers(as_http3(https_listener("a", "b")), speak_http3),
        eg_listener("inline", 10081, "backend", routes=merged_routes()),
    ]
    return [protect(base, USERS, **variant) for base in bases for variant in variants]


@every_envoy
def test_every_envoy_accepts_every_new_shape(envoy: EnvoyRelease, tmp_path: Path) -> None:
    listeners = every_shape()
    assert validate_with(envoy, listeners, tmp_path) == [None] * len(listeners)


@every_envoy
def test_the_check_has_teeth_envoy_rejects_a_broken_matcher(
    envoy: EnvoyRelease, tmp_path: Path
) -> None:
    broken = skip_when(OUR_FILTER, header_is(":path", regex="("))

    def break_ours(manager: Any) -> None:
        for http_filter in manager.http_filters:
            if http_filter.name == FILTER_NAME:
                http_filter.CopyFrom(broken)

    listener = edit_managers(protect(http_listener(), USERS, exemptions=[HEALTHZ]), break_ours)
    (error,) = validate_with(envoy, [listener], tmp_path)
    assert error is not None and "missing )" in error, error


# --- a real Envoy, the oldest and the newest ------------------------------------------------------


@dataclass
class Local:
    """Envoy (one release) and an echo backend behind cluster `backend`."""

    release: EnvoyRelease
    envoy: EnvoyProcess

    def serve(self, *listeners: Any) -> None:
        self.envoy.publish(list(listeners))


@pytest.fixture(scope="module", params=[ENVOY_RELEASES[0], ENVOY_RELEASES[-1]], ids=str)
def local(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Local]:
    release: EnvoyRelease = request.param
    binary = envoy_binary(release)
    with (
        EchoBackend() as backend,
        EnvoyProcess(
            tmp_path_factory.mktemp(f"envoy-{release.version}"),
            "backend",
            backend.port,
            binary=binary,
        ) as envoy,
    ):
        yield Local(release, envoy)


OPEN, AUTH = "exempt", "needs credentials"
# (request target, method) -> what a request without credentials gets, per normalisation:
# exempt (200), needs credentials (401; 200 with them), or Envoy's own answer before any
# filter (the same with credentials).
REQUEST_MATRIX: dict[tuple[str, str], tuple[str | int, str | int, str | int]] = {
    #                                              eg      eg-forward  none
    ("/healthz", "GET"):                           (OPEN,  OPEN,  OPEN),
    ("/healthz/", "GET"):                          (OPEN,  OPEN,  OPEN),
    ("/healthz/live", "POST"):                     (OPEN,  OPEN,  OPEN),
    ("/healthz?x=1", "GET"):                       (OPEN,  OPEN,  OPEN),
    ("/healthz?next=/../admin", "GET"):            (OPEN,  OPEN,  OPEN),
    ("/healthzX", "GET"):                          (AUTH,  AUTH,  AUTH),
    ("/HEALTHZ", "GET"):                           (AUTH,  AUTH,  AUTH),
    ("/admin", "GET"):                             (AUTH,  AUTH,  AUTH),
    ("/healthz/../admin", "GET"):                  (AUTH,  AUTH,  AUTH),
    ("/healthz/%2e%2e/admin", "GET"):              (AUTH,  AUTH,  AUTH),
    ("/healthz%2F..%2Fadmin", "GET"):              (307,   AUTH,  AUTH),
    ("/healthz%2Fx", "GET"):                       (307,   OPEN,  AUTH),
    ("//admin", "GET"):                            (AUTH,  AUTH,  AUTH),
    ("//healthz", "GET"):                          (OPEN,  AUTH,  AUTH),
    ("/healthz//x", "GET"):                        (OPEN,  AUTH,  AUTH),
    ("/healthz/./x", "GET"):                       (OPEN,  OPEN,  AUTH),
    ("/x/../healthz", "GET"):                      (OPEN,  OPEN,  AUTH),
    ("/%68ealthz", "GET"):                         (OPEN,  OPEN,  AUTH),
    ("/healthz#x", "GET"):                         (400,   400,   400),
    ("/healthz\\..\\admin", "GET"):                (AUTH,  AUTH,  AUTH),
    ("/healthz\\x", "GET"):                        (OPEN,  OPEN,  AUTH),
    ("/healthz;x=1/../admin", "GET"):              (AUTH,  AUTH,  AUTH),
    ("/healthz/..;/admin", "GET"):                 (AUTH,  AUTH,  AUTH),
    ("/healthz;/x", "GET"):                        (AUTH,  AUTH,  AUTH),
    ("http://www.example.com/healthz/../admin", "GET"): (AUTH, AUTH, AUTH),
    ("http://www.example.com/healthz", "GET"):     (OPEN,  OPEN,  OPEN),
    ("/.well-known/ready", "GET"):                 (OPEN,  OPEN,  OPEN),
    ("/.well-known/ready", "HEAD"):                (OPEN,  OPEN,  OPEN),
    ("/.well-known/ready", "POST"):                (AUTH,  AUTH,  AUTH),
    ("/.well-known/ready/", "GET"):                (AUTH,  AUTH,  AUTH),
    ("/.well-known/./ready", "GET"):               (OPEN,  OPEN,  AUTH),
}  # fmt: skip


def test_exempt_paths_need_no_credentials_and_no_path_trick_reaches_another_path(
    local: Local,
) -> None:
    ports = {setting: (free_port(), free_port()) for setting in NORMALISATION}
    listeners = []
    for setting, (open_port, protected_port) in ports.items():
        listeners.append(
            eg_listener(f"open-{setting}", open_port, "backend", normalisation=setting)
        )
        base = eg_listener(f"protected-{setting}", protected_port, "backend", normalisation=setting)
        listeners.append(protect(base, USERS, exemptions=[HEALTHZ, READY]))
    local.serve(*listeners)

    wrong = []
    for (target, method), expected in REQUEST_MATRIX.items():
        for setting, outcome in zip(NORMALISATION, expected, strict=True):
            open_port, protected_port = ports[setting]
            bare = send(protected_port, target, method=method)
            good = send(protected_port, target, method=method, headers=[basic_header()])
            bad = send(
                protected_port, target, method=method, headers=[basic_header("wrong-password")]
            )
            seen = (bare.status, good.status, bad.status)
            want = {OPEN: (200, 200, 200), AUTH: (401, 200, 401)}.get(outcome, (outcome,) * 3)
            if seen != want:
                wrong.append(f"{setting} {method} {target}: {seen}, expected {want}")
            router = send(open_port, target, method=method).router_path
            if (
                outcome == OPEN
                and method != "HEAD"
                and not promise_holds([HEALTHZ, READY], str(router), method)
            ):
                wrong.append(f"{setting} {method} {target}: exempt, but the router saw {router!r}")
    assert not wrong, "\n".join(wrong)


def basic_header(password: str = PASSWORD, user: str = "user") -> tuple[str, str]:
    return ("Authorization", basic(user, password)["Authorization"])


def test_the_backend_sees_no_basic_credentials_when_they_are_hidden(local: Local) -> None:
    plain_port, hidden_port = free_port(), free_port()
    local.serve(
        protect(eg_listener("plain", plain_port, "backend"), USERS, exemptions=[HEALTHZ]),
        protect(
            eg_listener("hidden", hidden_port, "backend"), USERS, exemptions=[HEALTHZ], hide=True
        ),
    )
    credentials = basic_header()
    bearer = ("Authorization", "Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln")
    spoofed = (USER_HEADER, "admin")

    plain = send(plain_port, "/private", headers=[credentials])
    assert plain.status == 200
    assert plain.backend_header("Authorization") == [credentials[1]]
    assert plain.backend_header(USER_HEADER) == ["user"]

    hidden = send(hidden_port, "/private", headers=[credentials])
    assert hidden.status == 200
    assert hidden.backend_header("Authorization") is None
    assert hidden.backend_header(USER_HEADER) == ["user"]

    for port in (plain_port, hidden_port):
        token_on_exempt_path = send(port, "/healthz", headers=[bearer])
        assert token_on_exempt_path.backend_header("Authorization") == [bearer[1]]
        assert send(port, "/private", headers=[bearer]).status == 401
        made_up_user = send(port, "/healthz", headers=[spoofed])
        assert made_up_user.status == 200 and made_up_user.backend_header(USER_HEADER) is None
        checked_user = send(port, "/private", headers=[credentials, spoofed])
        assert checked_user.backend_header(USER_HEADER) == ["user"]
        # Two Authorization headers are one value to Envoy: not valid Basic credentials.
        assert send(port, "/private", headers=[credentials, bearer]).status == 401
        assert send(port, "/private", headers=[bearer, credentials]).status == 401


USERS_OF = {"alice": "alice-s3cret", "bob": "bob-s3cret"}
MERGED_TABLES = {TEAM_A: f"alice:{sha('alice-s3cret')}\n", TEAM_B: f"bob:{sha('bob-s3cret')}\n"}
# (host, path) -> status for nobody, alice, bob. a.example is team-a's, b.example team-b's
# (which exempts /public), c.example carries no Gateway metadata.
MERGED_GRID: dict[tuple[str, str], tuple[int, int, int]] = {
    ("a.example", "/private"): (401, 200, 401),
    ("a.example", "/healthz"): (200, 200, 200),
    ("a.example", "/public"): (401, 200, 401),
    ("b.example", "/private"): (401, 401, 200),
    ("b.example", "/healthz"): (401, 401, 200),
    ("b.example", "/public"): (200, 200, 200),
    ("c.example", "/private"): (401, 401, 401),
    ("c.example", "/healthz"): (401, 401, 401),
    ("c.example", "/public"): (401, 401, 401),
}  # fmt: skip


def merged_listener(port: int) -> Any:
    """Two Gateways of two namespaces merged on one plain-HTTP port, as the Translation
    hook would leave them: the chain's table holds both Gateways' users, each virtual host
    only its own; team-a exempts /healthz and hides credentials, team-b exempts /public."""
    hosts = [
        virtual_host("team-a/gw-a/http/a_example", ["a.example"], "backend", TEAM_A),
        virtual_host("team-b/gw-b/http/b_example", ["b.example"], "backend", TEAM_B),
        virtual_host("other", ["c.example"], "backend"),
    ]
    routes = route_pb2.RouteConfiguration(name="team-a/gw-a/http", virtual_hosts=hosts)
    routes = with_gateway_users(routes, MERGED_TABLES.get)
    listener = eg_listener("team-a/gw-a/http", port, "backend", routes=routes)
    per_gateway = {TEAM_A: [HEALTHZ], TEAM_B.gateway(): [Exemption("PathPrefix", "/public")]}
    both = "".join(MERGED_TABLES.values())
    return protect(listener, both, per_gateway=per_gateway, hide=[TEAM_A])


def test_merged_gateways_admit_each_user_on_its_own_virtual_hosts_only(local: Local) -> None:
    port = free_port()
    local.serve(merged_listener(port))

    seen = {}
    for host, path in MERGED_GRID:
        statuses = [send(port, path, host=host).status]
        for user, password in USERS_OF.items():
            answer = send(port, path, host=host, headers=[basic_header(password, user)])
            statuses.append(answer.status)
            if answer.status == 200 and path == "/private":
                hidden = answer.backend_header("Authorization") is None
                assert hidden == (host == "a.example"), (host, user)  # team-a hides, team-b not
        seen[(host, path)] = tuple(statuses)
    assert seen == MERGED_GRID


# --- Envoy and the matcher model agree, on generated exemptions and request targets -------------

SAMPLE = settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TRICK_TARGETS = [key[0] for key in REQUEST_MATRIX]
random_bytes = st.binary(max_size=12).map(lambda b: b"/" + b.translate(None, b"\r\n "))


def targets_for(exemptions: list[Exemption]) -> st.SearchStrategy[list[bytes]]:
    """Each exemption's own path, paths near them (tricks before, inside and after), the
    request matrix's tricks, and random bytes."""
    near = requests_near(exemptions).map(lambda path: path.encode("utf-8", "replace"))
    tricks = st.sampled_from(TRICK_TARGETS).map(str.encode)
    chosen = st.lists(st.one_of(near, near, tricks, random_bytes), min_size=20, max_size=30)
    return chosen.map(lambda more: [e.value.encode() for e in exemptions] + more)


def test_envoy_exempts_exactly_what_the_model_says_and_only_inside_an_exemption(
    local: Local,
) -> None:
    outcomes: Counter[str] = Counter()

    @SAMPLE
    @given(st.data(), exemption_sets, st.sampled_from(sorted(NORMALISATION)))
    def agree(data: st.DataObject, exemptions: list[Exemption], setting: str) -> None:
        targets = data.draw(targets_for(exemptions))
        named = {m for e in exemptions for m in e.methods} - {"CONNECT"}  # no path to match
        method = data.draw(st.sampled_from(sorted({"GET", "POST", *named})))
        open_port, protected_port = free_port(), free_port()
        protected = eg_listener("protected", protected_port, "backend", normalisation=setting)
        local.serve(
            eg_listener("open", open_port, "backend", normalisation=setting),
            protect(protected, USERS, exemptions=exemptions),
        )
        ours = skip_when(OUR_FILTER, exempt_predicate(exemptions))
        for target in targets:
            reached = send(open_port, target)
            decided = send(protected_port, target, method=method)
            if reached.router_path is None:  # Envoy answered before any filter (400, 307)
                assert decided.status == reached.status, target
                outcomes["answered by Envoy"] += 1
                continue
            modelled = skips(ours, Request(reached.router_path, method))
            assert (decided.status == 200) == modelled, (target, reached.router_path, decided)
            outcomes["exempt" if modelled else "needs credentials"] += 1
            if modelled:
                assert promise_holds(exemptions, reached.router_path, method), target

    agree()
    assert min(outcomes.values()) >= 10 and len(outcomes) == 3, outcomes


# --- the Translation hook, through the server --------------------------------------------------


def team_policy(name: str, namespace: str, gateway: str, user: str, **spec: Any) -> bytes:
    target = {"kind": "Gateway", "name": gateway, "sectionName": "http"}
    return policy(name, user, USERS_OF[user], namespace=namespace, targets=[target], **spec)


ALICE_POLICY = team_policy(
    "alice", "team-a", "gw-a", "alice", exemptions=[{"path": {"type": "PathPrefix",
    "value": "/healthz"}}], hideCredentials=True,
)  # fmt: skip
BOB_POLICY = team_policy(
    "bob", "team-b", "gw-b", "bob",
    exemptions=[{"path": {"type": "PathPrefix", "value": "/public"}}],
)  # fmt: skip


def test_the_translation_hook_gives_each_gateway_its_users_exemptions_and_hiding(
    local: Local,
) -> None:
    """Envoy Gateway's PostTranslateModify, through gRPC to the real server: the merged
    listener reads its routes by RDS; the answer's route configuration, served to Envoy as
    Envoy Gateway serves it (here inlined), gives each Gateway's virtual hosts their own
    users, exemptions and credential hiding (the same grid as the hand-built one above)."""
    assert translated_grid(local, [ALICE_POLICY, BOB_POLICY], CompileOptions()) == MERGED_GRID


# Only team-b has a policy, on the chain named after team-a's Gateway.
ONLY_BOB = {
    ("a.example", "/private"): (401, 401, 401),
    ("b.example", "/private"): (401, 401, 200),
    ("b.example", "/public"): (200, 200, 200),
    ("c.example", "/private"): (401, 401, 401),
}


@pytest.mark.parametrize("mode", list(UnprotectedMode))
def test_a_gateway_without_policy_stays_as_the_unprotected_mode_says_beside_one_with(
    local: Local, mode: UnprotectedMode
) -> None:
    """With `passthrough`, team-a's Gateway (no policy) stays open on the shared chain
    while team-b's virtual hosts ask for bob; with `deny` it admits nobody. A virtual host
    without Envoy Gateway's metadata admits nobody in either mode."""
    expected = dict(ONLY_BOB)
    if mode is UnprotectedMode.PASSTHROUGH:
        expected[("a.example", "/private")] = (200, 200, 200)
    assert translated_grid(local, [BOB_POLICY], CompileOptions(unprotected=mode)) == expected


def translated_grid(
    local: Local, policies: list[bytes], options: CompileOptions
) -> dict[tuple[str, str], tuple[int, ...]]:
    """Translate the merged listener and its routes through the server (and once more,
    to see its own output changes nothing), serve the answer in Envoy, and send the grid's
    requests: (host, path) -> status for nobody, alice, bob. Credentials must be hidden
    exactly where alice's policy, when given, says so."""
    port = free_port()
    hosts = [
        virtual_host("team-a/gw-a/http/a_example", ["a.example"], "backend", TEAM_A),
        virtual_host("team-b/gw-b/http/b_example", ["b.example"], "backend", TEAM_B),
        virtual_host("other", ["c.example"], "backend"),
    ]
    routes = route_pb2.RouteConfiguration(name="team-a/gw-a/http", virtual_hosts=hosts)
    listener = edit_managers(eg_listener("team-a/gw-a/http", port, "backend"), by_rds(routes))
    sent = [api.ExtensionResource(unstructured_bytes=p) for p in policies]
    request = api.PostTranslateModifyRequest(
        post_translate_context=api.PostTranslateExtensionContext(extension_resources=sent),
        listeners=[listener],
        routes=[routes],
    )
    with hook_server(ServerSettings(options=options)) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.server.port}")
        with channel:
            translate = api_grpc.EnvoyGatewayExtensionStub(channel).PostTranslateModify
            answer = translate(request, timeout=30)
            again = api.PostTranslateModifyRequest()
            again.CopyFrom(request)
            del again.listeners[:], again.routes[:]
            again.listeners.extend(answer.listeners)
            again.routes.extend(answer.routes)
            assert translate(again, timeout=30) == answer  # its own output: no change
    (served,) = answer.listeners
    (served_routes,) = answer.routes
    local.serve(edit_managers(served, inline(served_routes)))

    hiding = {"a.example"} if ALICE_POLICY in policies else set()
    seen = {}
    for host, path in MERGED_GRID if len(policies) == 2 else ONLY_BOB:
        statuses = [send(port, path, host=host).status]
        for user, password in USERS_OF.items():
            reply = send(port, path, host=host, headers=[basic_header(password, user)])
            statuses.append(reply.status)
            if reply.status == 200 and path == "/private" and host in {"a.example", "b.example"}:
                hidden = reply.backend_header("Authorization") is None
                assert hidden == (host in hiding), (host, user)
        seen[(host, path)] = tuple(statuses)
    return seen


def by_rds(routes: Any) -> Callable[[Any], None]:
    """Make a manager read `routes` by RDS, as Envoy Gateway's do."""

    def change(manager: Any) -> None:
        manager.rds.route_config_name = routes.name
        manager.rds.config_source.ads.SetInParent()
        manager.rds.config_source.resource_api_version = config_source_pb2.V3

    return change


def inline(routes: Any) -> Callable[[Any], None]:
    """Serve `routes` inside the manager: what Envoy Gateway's RDS would send it."""

    def change(manager: Any) -> None:
        manager.route_config.CopyFrom(routes)

    return change
