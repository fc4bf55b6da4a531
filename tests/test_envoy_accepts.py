"""Every htpasswd table the compiler emits passes Envoy's own parser (`envoy --mode validate`).

The compiler's unit tests check its output against Envoy's documented rules; this runs
the real Envoy over the same hostile inputs, in one batch, so the two can never drift.
"""

from __future__ import annotations

from pathlib import Path

from backends import CredentialResolver
from compiler.listener import ChainAuth, apply
from compiler.pipeline import compile_listener, load_policies
from tests.builders import eg_security_filters, http_listener, https_listener, policy
from tests.support.validate import validate_listeners
from tests.test_compiler import HOSTILE_USERNAMES

HOSTILE_PASSWORDS = ["", "pass\nword", "\x00", "p" * 4097, "ünïcödé", "a:b", "#x", " spaced "]


def test_envoy_accepts_what_the_compiler_emits_for_hostile_policies(tmp_path: Path) -> None:
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
    listeners = []
    for resources in cases:
        policies = load_policies(resources, CredentialResolver())
        listeners.append(compile_listener(http_listener(*eg_security_filters()), policies).listener)
        listeners.append(compile_listener(https_listener("a", "b"), policies).listener)
    assert validate_listeners(listeners, tmp_path) == [None] * len(listeners)


def test_the_check_has_teeth_envoy_rejects_a_table_that_breaks_its_rules(tmp_path: Path) -> None:
    def with_users(text: str) -> object:
        listener, _ = apply(http_listener(), lambda _name, _default: ChainAuth(text, "X-A"))
        return listener

    results = validate_listeners(
        [with_users("user:$apr1$xyz\n"), with_users(""), with_users("a:{SHA}x\na:{SHA}x\n")],
        tmp_path,
    )
    assert all(results), results
    assert "{SHA}" in str(results[0])
