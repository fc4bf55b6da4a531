"""Every htpasswd table the compiler emits passes Envoy's own parser (`envoy --mode validate`).

The compiler's unit tests check its output against Envoy's documented rules; this runs
the real Envoy over the same hostile inputs, in one batch, so the two can never drift. It
asks every Envoy a supported Envoy Gateway runs (tests/support/envoys.py), 1.36 to 1.40:
a new shape of what the hook emits belongs here, or in a test that uses `every_envoy` too.
"""

from __future__ import annotations

from pathlib import Path

from backends import CredentialResolver
from compiler.listener import ChainAuth, apply
from compiler.pipeline import compile_listener, load_policies
from tests.support.builders import eg_security_filters, http_listener, https_listener, policy
from tests.support.envoys import EnvoyRelease, every_envoy, validate_with
from tests.support.hostile_names import HOSTILE_USERNAMES

HOSTILE_PASSWORDS = ["", "pass\nword", "\x00", "p" * 4097, "ünïcödé", "a:b", "#x", " spaced "]


def security_filters_of(envoy: EnvoyRelease) -> list[object]:
    """Envoy Gateway's SecurityPolicy filters as the Envoy Gateway that runs `envoy` emits them.

    Since v1.8 (Envoy 1.38) its listener-level oauth2 filter is an empty placeholder,
    configured per route, which older Envoys reject ("config must be present for global
    config"); v1.6 and v1.7 emitted the whole OAuth2 config there, disabled. For those the
    placeholder is left out: the other filters still place ours among Envoy Gateway's.
    """
    filters = eg_security_filters()
    if envoy.older_than("1.38"):
        filters = [f for f in filters if not f.name.startswith("envoy.filters.http.oauth2")]
    return filters


@every_envoy
def test_envoy_accepts_what_the_compiler_emits_for_hostile_policies(
    envoy: EnvoyRelease, tmp_path: Path
) -> None:
    cases = [[policy("hostile", name, "pw"), policy()] for name in HOSTILE_USERNAMES.values()]
    cases += [[policy("weak", "bob", pw), policy()] for pw in HOSTILE_PASSWORDS]
    cases += [
        [],
        [b"{truncated", b"[]", b'"text"'],
        [policy("a", "user", "x"), policy("b", "user", "y")],  # conflict
        [policy("a", "alice", "x", header="X-A"), policy("b", "bob", "y", header="X-B")],
        [policy(f"p{i}", f"user{i}", f"pw{i}") for i in range(500)],
        [policy(username="jürgen"), policy("c", "ユーザー", "x")],
    ]
    filters = security_filters_of(envoy)
    listeners = []
    for resources in cases:
        policies = load_policies(resources, CredentialResolver())
        listeners.append(compile_listener(http_listener(*filters), policies).listener)
        listeners.append(compile_listener(https_listener("a", "b"), policies).listener)
    assert validate_with(envoy, listeners, tmp_path) == [None] * len(listeners)


@every_envoy
def test_the_check_has_teeth_envoy_rejects_a_table_that_breaks_its_rules(
    envoy: EnvoyRelease, tmp_path: Path
) -> None:
    def with_users(text: str) -> object:
        listener, _ = apply(http_listener(), lambda _name, _default: ChainAuth(text, "X-A"))
        return listener

    results = validate_with(
        envoy,
        [with_users("user:$apr1$xyz\n"), with_users(""), with_users("a:{SHA}x\na:{SHA}x\n")],
        tmp_path,
    )
    assert all(results), results
    assert "{SHA}" in str(results[0])
