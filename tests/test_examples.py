"""docs/examples/: the listener and a policy of each form do what the docs say they do.

A user tries `compile` on them first: the plain policy with the listener, as the README
shows, must print the listener with our filter, and every Envoy a supported Envoy Gateway
runs must accept both. The store forms compile too once their secrets exist: here Vault is
the stand-in read by hvac and AWS is moto read by boto3, as in the other store tests. (That
every example passes the CRD and the parser is checked with the docs' other policies, in
tests/test_chart.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from backends import CredentialResolver
from compiler.pipeline import compile_listener, load_policies
from server.envoy_json import listener_from_dict
from server.manifests import read_listeners, read_policies
from tests.support.aws import MotoServer, dummy_aws_environment
from tests.support.builders import managers, our_filter, our_filter_configs
from tests.support.commands import EXTENSION_SERVER
from tests.support.envoys import EnvoyRelease, every_envoy, validate_with
from tests.support.secrets import remember, sha
from tests.support.stores import both_stores
from tests.support.vault import VaultStandIn

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
LISTENER = EXAMPLES / "listener.yaml"
FORMS = {
    "policy-password.yaml": "a plain password",
    "policy-password-from-vault.yaml": "passwordFrom Vault",
    "policy-password-from-aws.yaml": "passwordFrom AWS Secrets Manager",
    "policy-users-from-vault.yaml": "usersFrom Vault",
    "policy-users-from-aws.yaml": "usersFrom AWS Secrets Manager",
}
PASSWORDS = {
    "ops": "ops-example-password",  # Vault, gateways/default/ops
    "ci": "ci-example-password",  # AWS, gateways/default/ci
    "alice": "alice-example-password",  # Vault, gateways/default/team
    "carol": "carol-example-password",  # AWS, gateways/default/partners
}
READY_HASHES = {"bob": sha("bob-example-password"), "dave": sha("dave-example-password")}


def example_listener() -> object:
    (data,) = read_listeners(LISTENER)
    return listener_from_dict(data)


def compiled_by_the_cli() -> object:
    """The README's command: the plain policy on the example listener."""
    done = subprocess.run(
        [EXTENSION_SERVER, "compile", str(EXAMPLES / "policy-password.yaml"),
         "--listener", str(LISTENER)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    (printed,) = yaml.safe_load(done.stdout)
    return listener_from_dict(printed)


def test_there_is_a_policy_of_each_form_and_nothing_else() -> None:
    assert sorted(path.name for path in EXAMPLES.glob("policy-*.yaml")) == sorted(FORMS)


def test_the_plain_example_on_the_example_listener_gets_the_filter_before_the_router() -> None:
    listener = compiled_by_the_cli()
    (manager,) = managers(listener)
    assert [f.name for f in manager.http_filters][-1] == "envoy.filters.http.router"
    config = our_filter(manager)
    assert config.users.inline_string == "user:{SHA}V7KtmQRNM3GXwMOf04I1aP+B5Io=\n"
    assert config.forward_username_header == "X-Example-Ext"


@every_envoy
def test_every_envoy_accepts_the_example_listener_before_and_after_the_hook(
    envoy: EnvoyRelease, tmp_path: Path
) -> None:
    listeners = [example_listener(), compiled_by_the_cli()]
    assert validate_with(envoy, listeners, tmp_path) == [None, None]


@pytest.fixture
def stores(
    vault: VaultStandIn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[CredentialResolver]:
    """Vault and AWS holding the secrets the examples' comments tell the user to store."""
    for name in [*os.environ]:
        if name.startswith("VAULT_"):
            monkeypatch.delenv(name)
    dummy_aws_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))  # hvac reads ~/.vault-token
    remember(*PASSWORDS.values())
    with MotoServer() as moto:
        moto.reset()  # moto keeps its state per process, not per server
        vault.put_v2("gateways/default/ops", {"password": PASSWORDS["ops"]})
        vault.put_v2(
            "gateways/default/team", {"alice": PASSWORDS["alice"], "bob": READY_HASHES["bob"]}
        )
        secrets = moto.secrets_client()
        secrets.create_secret(Name="gateways/default/ci", SecretString=PASSWORDS["ci"])
        partners = {"carol": PASSWORDS["carol"], "dave": READY_HASHES["dave"]}
        secrets.create_secret(Name="gateways/default/partners", SecretString=json.dumps(partners))
        resolver = both_stores(vault, moto, tmp_path, timeout=2.0)
        yield resolver
        resolver.close()
        moto.reset()


def test_every_example_compiles_once_its_secrets_are_stored(stores: CredentialResolver) -> None:
    raw, sources = read_policies(sorted(EXAMPLES.glob("policy-*.yaml")))
    result = compile_listener(example_listener(), load_policies(raw, stores, sources))

    assert [str(error) for error in result.errors] == []
    (config,) = our_filter_configs(result.listener)
    lines = set(config.users.inline_string.splitlines())
    expected = {f"{user}:{sha(password)}" for user, password in PASSWORDS.items()}
    expected |= {f"{user}:{hashed}" for user, hashed in READY_HASHES.items()}
    assert lines == expected | {"user:{SHA}V7KtmQRNM3GXwMOf04I1aP+B5Io="}
