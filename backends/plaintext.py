"""The policy itself as the password store: spec.username + spec.password (the seed's form)."""

from __future__ import annotations

from compiler.model import Credential, PlainCredentials


def resolve_plaintext(credentials: PlainCredentials) -> list[Credential]:
    return [
        Credential(credentials.username, credentials.password, "spec.username", "spec.password")
    ]
