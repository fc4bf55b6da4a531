"""Step 2 of the pipeline, resolve: where a policy's passwords come from.

A resolver turns a Policy into the credentials it names, or raises a PolicyError that
denies that policy's users. Resolvers never let anyone in on failure (fail-closed).
"""

from __future__ import annotations

from collections.abc import Sequence

from backends.plaintext import resolve_plaintext
from compiler.model import Credential, PlainCredentials, Policy


def resolve(policy: Policy) -> Sequence[Credential]:
    """Resolve a policy's credentials with the backend its spec names."""
    if isinstance(policy.credentials, PlainCredentials):
        return resolve_plaintext(policy.credentials)
    raise TypeError(f"no backend for {type(policy.credentials).__name__}")  # pragma: no cover
