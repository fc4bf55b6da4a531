"""Errors as values: one exception type per failure family.

Every error names the policy (namespace/name), the field, what is wrong and what to do
about it. None of them ever carries a password or a hash: messages are built from the
field name and a description of the problem, and a user name only where it is not secret.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.model import PolicyRef


@dataclass(eq=False)
class PolicyError(Exception):
    """A problem with one policy; the policy (or the named entry of it) is left out."""

    policy: PolicyRef
    field: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"policy {self.policy}: {self.field}: {self.problem}; {self.fix}"


class MalformedPolicyError(PolicyError):
    """Not a readable ListenerContextExample: bad JSON, wrong types, missing fields."""


class InvalidUsernameError(PolicyError):
    """A user name Envoy would reject or silently drop, or that RFC 7617 does not allow."""


class InvalidPasswordError(PolicyError):
    """A password that cannot be used (empty, too long, control characters)."""


class InvalidHeaderError(PolicyError):
    """A forwardUsernameHeader that is not a usable HTTP header name."""


class ConflictError(PolicyError):
    """Two policies claim the same user name or disagree on a shared setting."""


class UnsupportedHashError(PolicyError):
    """A stored hash of a scheme Envoy cannot verify (bcrypt, apr1, crypt, ...)."""


class PlaintextForbiddenError(PolicyError):
    """spec.password on a server that runs with --forbid-plaintext."""


class TenancyError(PolicyError):
    """A store reference outside the paths the policy's namespace may read."""


class UnresolvedCredentialError(PolicyError):
    """The store could not give the credential (down, denied, missing): its users are denied."""


def describe(value: str, limit: int = 64) -> str:
    """A printable, bounded rendering of a non-secret value (a user name) for messages."""
    shown = value if len(value) <= limit else value[:limit] + "..."
    return repr(shown)
