"""Envoy Gateway's own listeners, through the real server over gRPC, accepted by every Envoy.

Every listener of the shared corpus (exactly as Envoy Gateway's translator emits them)
that an Envoy release accepts as it stands is sent to the running extension server with no
policy, with two policies, and with policies that use every optional field; that release
must accept every result. The releases are those of every supported Envoy Gateway
(tests/support/envoys.py), from 1.36 (Envoy Gateway v1.6) to 1.40.

Where the passwords come from (the policy, Vault, AWS) is resolved before the listener is
built, so the listener's shape is the same for every form: what differs is the filter's
config, the users and the forwarded header. The "every optional field" policies read theirs
from the Vault stand-in, through the server's real Vault client.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backends import CredentialResolver
from compiler.listener import FILTER_NAME
from compiler.pipeline import compile_listener, load_policies
from server.demo.gateway import ExtensionServerProcess, GatewayStandIn
from server.demo.story import seed_policy
from tests.support.builders import managers, our_filter_configs
from tests.support.corpus import require_corpus
from tests.support.envoys import EnvoyRelease, every_envoy, validate_with
from tests.support.secrets import remember, sha
from tests.support.validate import Listener, load_corpus_listeners
from tests.support.vault import VaultStandIn

# Corpus listeners that every Envoy of the matrix rejects as they stand, and why.
REJECTED_BY_EVERY_ENVOY = {
    # the mock extension injects a listener without an address
    "extension-xds-ir--extensionpolicy-extension-server#0": "address is necessary",
    "extension-xds-ir--post-translate-listeners-routes#2": "address is necessary",
    # the GeoIP database file named in the config is not on this machine
    "xds-ir--geoip-authorization#0": "Maxmind",
    "xds-ir--geoip-authorization-direct-source-ip#0": "Maxmind",
    # two filter chains with identical matchers
    "xds-ir--multiple-simple-tcp-route-same-port#0": "same matching rules",
    # ipv4_compat on an IPv4 address
    "xds-ir--tcp-listener-ipfamily#0": "ipv4_compat",
}
# An oauth2 filter with no listener-level config: since v1.8 Envoy Gateway emits this
# placeholder and configures it per route, which Envoy before 1.38 (the Envoy of v1.8)
# rejects. Envoy Gateway v1.6 and v1.7 emitted the whole config there, disabled.
OAUTH2_WITHOUT_CONFIG = dict.fromkeys(
    [
        "xds-ir--multiple-listeners-same-port-with-different-filters#0",
        "xds-ir--oidc#0",
        "xds-ir--oidc-and-jwt-with-passthrough#0",
        "xds-ir--oidc-backend-cluster-provider#0",
        "xds-ir--oidc-provider-traffic-features#0",
        "xds-ir--securitypolicy-with-oidc-jwt-authz#0",
    ],
    "config must be present for global config",
)
# Fields Envoy 1.36 does not know yet: it rejects the whole listener.
FIELDS_NEWER_THAN_1_36 = {
    "xds-ir--geoip-authorization#0": "no such field: 'geoFieldKeys'",
    "xds-ir--geoip-authorization-direct-source-ip#0": "no such field: 'geoFieldKeys'",
    "xds-ir--tracing-span-name#0": "no such field: 'operation'",
    "xds-ir--tracing-span-name#1": "no such field: 'operation'",
}
# Corpus listeners each Envoy release rejects as they stand: identifier -> part of the reason.
KNOWN_REJECTED = {
    "1.36.4": {**REJECTED_BY_EVERY_ENVOY, **OAUTH2_WITHOUT_CONFIG, **FIELDS_NEWER_THAN_1_36},
    "1.37.0": {**REJECTED_BY_EVERY_ENVOY, **OAUTH2_WITHOUT_CONFIG},
    "1.38.3": REJECTED_BY_EVERY_ENVOY,
    "1.39.3": REJECTED_BY_EVERY_ENVOY,
    "1.40.0": REJECTED_BY_EVERY_ENVOY,
}

NAMESPACE = "envoy-gateway"  # the corpus' Gateways: envoy-gateway/gateway-1, gateway-2, ...
VAULT_TOKEN = "hvs.conformance-server-token"
VAULT_PASSWORD = "carol-vault-password"
STORED_USERS = {
    "dave": "dave-vault-password",
    "ünïcødé-名前": "unicode-vault-password",
    "n" * 256: "longest-name-vault-password",  # the longest name Envoy takes (256 bytes)
    "erin": sha("erin-ready-hash-password"),  # a ready {SHA} hash, used as it is
}
TEAM_HEADER = "X-Team-User"


def team_policy() -> dict[str, Any]:
    """A second policy, for the corpus' Gateway `envoy-gateway/gateway-1`, with its own header."""
    policy = seed_policy(namespace=NAMESPACE)
    policy["metadata"]["name"] = "team"
    policy["spec"]["targetRefs"][0]["name"] = "gateway-1"
    policy["spec"].update(username="alice", password="s3cret", forwardUsernameHeader=TEAM_HEADER)
    return policy


def every_optional_field() -> list[dict[str, Any]]:
    """Policies that use every optional field: a password and a user list from Vault, a
    section of one Gateway and a whole other one, a forwarded header, a credentials revision."""
    from_vault = seed_policy(namespace=NAMESPACE)
    from_vault["metadata"]["name"] = "carol"
    from_vault["spec"] = {
        "targetRefs": [
            {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gateway-1",
             "sectionName": "https1"},
            {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gateway-2"},
        ],
        "username": "carol",
        "passwordFrom": {"vault": {"path": f"secret/data/gateways/{NAMESPACE}/carol",
                                   "key": "password"}},
        "forwardUsernameHeader": TEAM_HEADER,
        "credentialsRevision": "r1",
    }  # fmt: skip
    user_list = seed_policy(namespace=NAMESPACE)
    user_list["metadata"]["name"] = "team-users"
    user_list["spec"] = {
        "targetRefs": [{"kind": "Gateway", "name": "gateway-1"}],
        "usersFrom": {"vault": {"path": f"secret/data/gateways/{NAMESPACE}/team-users"}},
        "forwardUsernameHeader": TEAM_HEADER,
    }
    return [from_vault, user_list, team_policy()]


POLICY_SETS = {
    "no policy": list[dict[str, Any]](),
    "two policies": [seed_policy(), team_policy()],
    "every optional field": every_optional_field(),
}


@dataclass
class Corpus:
    """The corpus listeners xds-protos can parse, and each through the hook per policy set."""

    listeners: list[tuple[str, Listener]]
    hooked: dict[str, list[Listener]]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStandIn]:
    """The real server, reading Vault (the stand-in), called as Envoy Gateway calls it."""
    workdir = tmp_path_factory.mktemp("server")
    remember(VAULT_TOKEN)
    (workdir / "vault-token").write_text(VAULT_TOKEN)
    with VaultStandIn() as vault:
        vault.add_token(VAULT_TOKEN, policies=["secret/data/gateways/"])
        vault.put_v2(f"gateways/{NAMESPACE}/carol", {"password": VAULT_PASSWORD})
        vault.put_v2(f"gateways/{NAMESPACE}/team-users", STORED_USERS)
        vault_args = ["--vault-addr", vault.url, "--vault-token-file", str(workdir / "vault-token")]
        with ExtensionServerProcess(workdir / "extension-server.log", *vault_args) as server:
            stand_in = GatewayStandIn(server.address)
            yield stand_in
            stand_in.close()


@pytest.fixture(scope="module")
def corpus(gateway: GatewayStandIn) -> Corpus:
    loaded = load_corpus_listeners(require_corpus())
    listeners = [(ident, item) for ident, item in loaded if not isinstance(item, str)]
    unparsed = [ident for ident, item in loaded if isinstance(item, str)]
    assert len(loaded) == 386  # what the corpus holds
    # A few use types newer than xds-protos knows; an upgrade can only shrink this.
    assert len(unparsed) <= 3, unparsed
    hooked = {
        name: [gateway.translate(listener, policies) for _, listener in listeners]
        for name, policies in POLICY_SETS.items()
    }
    return Corpus(listeners, hooked)


@pytest.fixture(scope="module")
def as_they_stand(
    corpus: Corpus, tmp_path_factory: pytest.TempPathFactory
) -> dict[EnvoyRelease, list[str | None]]:
    """Each Envoy release's verdict on every corpus listener as it stands, filled on demand."""
    return _Verdicts(corpus, tmp_path_factory)


class _Verdicts(dict[EnvoyRelease, list[str | None]]):
    def __init__(self, corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> None:
        super().__init__()
        self.corpus = corpus
        self.tmp_path_factory = tmp_path_factory

    def __missing__(self, envoy: EnvoyRelease) -> list[str | None]:
        listeners = [listener for _, listener in self.corpus.listeners]
        workdir = self.tmp_path_factory.mktemp(f"as-they-stand-{envoy}")
        self[envoy] = verdicts = validate_with(envoy, listeners, workdir)
        return verdicts


@every_envoy
def test_envoy_rejects_only_the_known_corpus_listeners_as_they_stand(
    envoy: EnvoyRelease,
    corpus: Corpus,
    as_they_stand: dict[EnvoyRelease, list[str | None]],
) -> None:
    verdicts = as_they_stand[envoy]
    rejected = {
        ident: error
        for (ident, _), error in zip(corpus.listeners, verdicts, strict=True)
        if error is not None
    }
    known = KNOWN_REJECTED[envoy.version]
    assert sorted(rejected) == sorted(known)
    for ident, error in rejected.items():
        # protobuf's messages vary their spacing from run to run on purpose
        assert known[ident] in " ".join(error.split()), f"{ident}: {error}"
    print(
        f"\n{envoy} (Envoy Gateway {envoy.gateway}): {len(corpus.listeners) - len(rejected)} "
        f"of {len(corpus.listeners)} corpus listeners accepted as they stand"
    )


@every_envoy
@pytest.mark.parametrize("policy_set", POLICY_SETS)
def test_every_corpus_listener_envoy_accepts_is_still_accepted_after_the_hook(
    envoy: EnvoyRelease,
    policy_set: str,
    corpus: Corpus,
    as_they_stand: dict[EnvoyRelease, list[str | None]],
    tmp_path: Path,
) -> None:
    kept = [index for index, error in enumerate(as_they_stand[envoy]) if error is None]
    hooked = [corpus.hooked[policy_set][index] for index in kept]

    results = validate_with(envoy, hooked, tmp_path)

    idents = [corpus.listeners[index][0] for index in kept]
    assert {ident: error for ident, error in zip(idents, results, strict=True) if error} == {}
    print(f"\n{envoy}: {len(hooked)} listeners through the hook ({policy_set}), all accepted")


@pytest.mark.parametrize("policy_set", POLICY_SETS)
def test_every_http_connection_manager_gets_exactly_one_filter_of_ours(
    corpus: Corpus, policy_set: str
) -> None:
    protected = 0
    for (ident, before), after in zip(corpus.listeners, corpus.hooked[policy_set], strict=True):
        assert len(managers(after)) == len(managers(before)), ident
        for manager in managers(after):
            assert [f.name for f in manager.http_filters].count(FILTER_NAME) == 1, ident
            assert manager.http_filters[-1].name != FILTER_NAME, ident  # never after the router
            protected += 1
    print(f"\n{policy_set}: {protected} HTTP connection managers protected")


def test_the_users_from_vault_and_every_header_reach_the_listeners(corpus: Corpus) -> None:
    """Guards the matrix against testing only 'nobody' tables: the stored users arrive."""
    users: set[str] = set()
    headers: set[str] = set()
    for listener in corpus.hooked["every optional field"]:
        for config in our_filter_configs(listener):
            users |= {line.split(":", 1)[0] for line in config.users.inline_string.splitlines()}
            headers.add(config.forward_username_header)
    assert {"carol", "alice", *STORED_USERS} <= users
    assert headers == {TEAM_HEADER, "X-Example-Ext"}  # X-Example-Ext: chains no policy names


def test_the_hook_applied_to_its_own_output_changes_nothing(corpus: Corpus) -> None:
    policies = load_policies([_json(seed_policy()), _json(team_policy())], CredentialResolver())
    for ident, listener in corpus.listeners:
        once = compile_listener(listener, policies).listener
        twice = compile_listener(once, policies).listener
        assert once.SerializeToString(deterministic=True) == twice.SerializeToString(
            deterministic=True
        ), ident


def _json(policy: dict[str, Any]) -> bytes:
    return json.dumps(policy).encode()
