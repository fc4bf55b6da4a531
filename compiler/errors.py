"""Errors as values: one exception type per failure family.

Every error names the policy (namespace/name), the field, what is wrong and what to do
about it. None of them ever carries a password or a hash: messages are built from the
field name and a description of the problem, and a user name only where it is not secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from compiler.model import PolicyRef


@dataclass(eq=False)
class PolicyError(Exception):
    """A problem with one policy; the policy (or the named entry of it) is left out.

    `reason` names the failure family in metrics and log lines (a fixed word per class,
    never anything from the policy).
    """

    policy: PolicyRef
    field: str
    problem: str
    fix: str

    reason: ClassVar[str] = "policy_error"

    def __str__(self) -> str:
        return f"policy {self.policy}: {self.field}: {self.problem}; {self.fix}"


class MalformedPolicyError(PolicyError):
    """Not a readable ListenerContextExample: bad JSON, wrong types, missing fields."""

    reason = "malformed"


class NoTargetError(MalformedPolicyError):
    """A policy that names no Gateway: it would otherwise apply to every chain it reaches."""

    reason = "no_target"


class InvalidUsernameError(PolicyError):
    """A user name Envoy would reject or silently drop, or that RFC 7617 does not allow."""

    reason = "invalid_username"


class InvalidPasswordError(PolicyError):
    """A password that cannot be used (empty, too long, control characters)."""

    reason = "invalid_password"


class InvalidHeaderError(PolicyError):
    """A forwardUsernameHeader that is not a usable HTTP header name, or one proxies own."""

    reason = "invalid_header"


class ConflictError(PolicyError):
    """Two policies claim the same user name or disagree on a shared setting."""

    reason = "conflict"


class UnsupportedHashError(PolicyError):
    """A stored hash of a scheme Envoy cannot verify (bcrypt, apr1, crypt, ...)."""

    reason = "unsupported_hash"


class PlaintextForbiddenError(PolicyError):
    """spec.password on a server that runs with --forbid-plaintext."""

    reason = "plaintext_forbidden"


class TenancyError(PolicyError):
    """A store reference outside the paths the policy's namespace may read."""

    reason = "tenancy"


@dataclass(eq=False)
class UnresolvedCredentialError(PolicyError):
    """The store could not give the credential (down, denied, missing): its users are denied."""

    # What the store answered (backends/stores.py StoreOutcome: not_found, forbidden,
    # unavailable, ...), for Kubernetes Events; None when no store was asked.
    outcome: str | None = None

    reason = "unresolved"


class TooLargeError(PolicyError):
    """A policy left out for its size: more users than the server takes from one policy, or
    an answer that would not fit in the message limit with them."""

    reason = "too_large"


class InternalPolicyError(PolicyError):
    """Handling this policy failed in a way the server did not foresee (a bug): the policy
    is left out, its users denied, and every other policy of the call goes on."""

    reason = "internal"


def internal_error(policy: PolicyRef, field: str, error: BaseException) -> InternalPolicyError:
    """The error for an exception no rule foresaw, naming only its type (never its text,
    which may quote a value)."""
    return InternalPolicyError(
        policy,
        field,
        f"could not be handled ({type(error).__name__})",
        "its users are denied; this is a bug of the extension server, please report it "
        "with the server's log line",
    )


def describe(value: str, limit: int = 64) -> str:
    """A printable, bounded rendering of a non-secret value (a user name) for messages."""
    shown = value if len(value) <= limit else value[:limit] + "..."
    return repr(shown)
