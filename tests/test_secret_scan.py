"""The suite's no-secrets-in-logs check finds what it is meant to find (its negative control)."""

from __future__ import annotations

from tests.support.secrets import leaks, remember, sha


def test_a_remembered_password_or_any_sha_hash_in_a_log_is_found() -> None:
    remember("canary-password-7f3a")
    found = leaks(
        [
            ("a.log", "level=info event=hook.listener policies=default/a users=1"),
            ("b.log", "level=warning error='bad value canary-password-7f3a'"),
            ("c.log", "users=" + sha("anything")),
        ]
    )
    assert found == ["b.log: a test secret (20 characters)", "c.log: a {SHA} hash"]
