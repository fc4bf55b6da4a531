"""The fuzz run's `store-values` target: whatever a team stores, the call is answered.

A team controls what lies under its own store prefix. Each example stores generated values
(tests/support/poison.py: JSON of any shape, nested past any parser's limit, huge, empty,
htpasswd text with odd line ends, hashes of every scheme) in Vault and Secrets Manager and
resolves four policies that read them beside a plain neighbour policy. The stores are the
real `VaultStore` and `AwsSecretsManagerStore` with their HTTP step replaced by the JSON
decoding the clients do (hvac's and botocore's `json.loads`), so each value goes through
the same reading, checking and compiling as in production, thousands of times a minute.

A crash is any exception out of the pipeline, a listener left unprotected, the neighbour
not admitted, or a store failure that is not that policy's own error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st

from backends import CredentialResolver, ResolverSettings
from backends.aws import AwsSecretsManagerStore, AwsSettings
from backends.vault import VaultSettings, VaultStore
from compiler.htpasswd import parse_like_envoy
from compiler.pipeline import compile_listener, load_policies
from tests.support.builders import managers, our_filter
from tests.support.hostile_checks import require
from tests.support.poison import AWS_STRINGS, VAULT_DOCUMENTS, VAULT_VALUES, policy_objects
from tests.support.vault import encode_json

NEIGHBOUR = json.dumps(
    {
        "apiVersion": "example.extensions.io/v1alpha1",
        "kind": "ListenerContextExample",
        "metadata": {"name": "neighbour", "namespace": "default"},
        "spec": {
            "targetRefs": [{"kind": "Gateway", "name": "eg"}],
            "username": "nina",
            "password": "neighbour-password",
        },
    }
).encode()


def _reader(name: str, ref: dict[str, Any], user: str | None = None) -> bytes:
    spec: dict[str, Any] = {"targetRefs": [{"kind": "Gateway", "name": "eg"}]}
    if user is None:
        spec["usersFrom"] = ref
    else:
        spec.update(username=user, passwordFrom=ref)
    document = {
        "apiVersion": "example.extensions.io/v1alpha1",
        "kind": "ListenerContextExample",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }
    return json.dumps(document).encode()


READERS = [
    _reader("vault-users", {"vault": {"path": "secret/data/gateways/default/users"}}),
    _reader(
        "vault-password",
        {"vault": {"path": "secret/data/gateways/default/password", "key": "password"}},
        "vera",
    ),
    _reader("aws-users", {"awsSecretsManager": {"secretId": "gateways/default/users"}}),
    _reader("aws-password", {"awsSecretsManager": {"secretId": "gateways/default/password"}}, "al"),
]


class StoredVault(VaultStore):
    """A VaultStore whose HTTP answers are these documents, decoded as hvac decodes them."""

    def __init__(self, documents: Mapping[str, Any]) -> None:
        super().__init__(VaultSettings(addr="http://vault.invalid"))
        self._documents = documents

    def _get(self, path: str, params: Mapping[str, Any] | None) -> Mapping[str, Any]:
        envelope = {"data": {"data": self._documents[path], "metadata": {"version": 1}}}
        decoded = json.loads(encode_json(envelope))
        assert isinstance(decoded, Mapping)
        return decoded


class StoredAws(AwsSecretsManagerStore):
    """An AwsSecretsManagerStore whose answers hold these SecretStrings, decoded as botocore
    decodes them."""

    def __init__(self, strings: Mapping[str, str]) -> None:
        super().__init__(AwsSettings(region="eu-west-1"))
        self._strings = strings

    def _call(self, operation: str, ref: Any, **request: Any) -> Any:
        body = json.dumps({"SecretString": self._strings[ref.secret_id], "VersionId": "v1"})
        return json.loads(body)


@st.composite
def stored_examples(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "vault": {
            "secret/data/gateways/default/users": draw(VAULT_DOCUMENTS),
            "secret/data/gateways/default/password": {"password": draw(VAULT_VALUES)},
        },
        "aws": {
            "gateways/default/users": draw(AWS_STRINGS),
            "gateways/default/password": draw(AWS_STRINGS),
        },
        "others": draw(st.lists(policy_objects(), max_size=2)),
    }


def check_stored(example: dict[str, Any], listeners: list[Any]) -> None:
    """Resolve and compile; the call is answered, protected, and the neighbour let in."""
    resolver = CredentialResolver(
        ResolverSettings(cache_ttl=0.0, max_stale=0.0, max_users_per_policy=1_000),
        {"vault": StoredVault(example["vault"]), "aws": StoredAws(example["aws"])},
    )
    try:
        policies = load_policies([NEIGHBOUR, *READERS, *example["others"]], resolver)
        for listener in listeners:
            result = compile_listener(listener, policies)
            require(result.report.managers_protected > 0, "a listener left unprotected")
            for table in _tables(result.listener):
                require("nina" in parse_like_envoy(table), "the neighbour is not admitted")
    finally:
        resolver.close()


def _tables(listener: Any) -> list[str]:
    return [our_filter(hcm).users.inline_string for hcm in managers(listener)]


def stored_reproducer(example: dict[str, Any]) -> str:
    return (
        "from reliability.stored import check_stored\n"
        "from reliability.fuzz import POLICY_LISTENERS\n"
        f"check_stored({example!r}, POLICY_LISTENERS)"
    )
