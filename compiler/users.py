"""Step 3, compile: resolved credentials of several policies -> one conflict-free user table.

Conflict rule (the Gateway API's own): when two policies name the same user, the oldest
policy (metadata.creationTimestamp) wins, then the lower namespace/name; the other
policy's entry is left out with a ConflictError. A name is never emitted twice.
The same rule picks the forwarded-username header when policies disagree on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from compiler.errors import (
    ConflictError,
    InvalidPasswordError,
    InvalidUsernameError,
    PolicyError,
    UnsupportedHashError,
    describe,
    internal_error,
)
from compiler.htpasswd import (
    SHA_SCHEME,
    EnvoyWouldReject,
    all_plain,
    envoy_line_ok,
    password_problem,
    render,
    sha_hash,
    sha_hash_problem,
    sha_hashes,
    username_problem,
)
from compiler.model import (
    NO_CREDENTIALS,
    PLAIN,
    Credential,
    CredentialKind,
    Credentials,
    Policy,
    PolicyRef,
    Secret,
    Source,
    ValueKey,
)
from compiler.schemes import scheme_label, scheme_of


@dataclass(frozen=True, eq=False)
class Resolved:
    """A policy with the credentials its backend resolved (or the error that stopped it).

    Compared by `key`, never field by field: a column of 100 000 passwords is not compared
    on every hook call.
    """

    policy: Policy
    credentials: Credentials = NO_CREDENTIALS
    error: PolicyError | None = None
    source: Source = PLAIN

    @property
    def key(self) -> ValueKey:
        return ValueKey(self.policy, self.source)


@dataclass(frozen=True)
class UserTable:
    """The compiled table of one set of policies."""

    htpasswd: str
    users: int
    errors: tuple[PolicyError, ...]
    owners: Mapping[str, PolicyRef]  # user name -> the policy whose entry is in the table


def compile_users(resolved: Sequence[Resolved]) -> UserTable:
    """Validate, hash and de-duplicate every credential, in precedence order."""
    hashes: dict[str, str] = {}  # user name -> {SHA} hash
    owners: dict[str, PolicyRef] = {}  # user name -> the policy that defined it
    errors: list[PolicyError] = []
    for item in sorted(resolved, key=lambda item: item.policy.precedence):
        if item.error is not None:
            errors.append(item.error)
            continue
        try:
            added, rejected = _entries(item, owners)
        except Exception as error:  # unforeseen: this policy only, never the table
            errors.append(internal_error(item.policy.ref, _field(item.credentials), error))
            continue
        hashes.update(added)
        owners.update(dict.fromkeys(added, item.policy.ref))
        errors.extend(rejected)
    text, dropped = _render(hashes, owners, errors)
    if dropped:  # a policy left out whole, after the fact
        owners = {name: ref for name, ref in owners.items() if ref not in dropped}
    return UserTable(text, len(owners), tuple(errors), owners)


def _entries(
    item: Resolved, owners: Mapping[str, PolicyRef]
) -> tuple[dict[str, str], list[PolicyError]]:
    """One policy's users as name -> {SHA} hash, and the entries left out, with why."""
    credentials, ref = item.credentials, item.policy.ref
    if _in_bulk(credentials, owners):
        names = credentials.usernames
        return dict(zip(names, sha_hashes(credentials.passwords.reveal()), strict=True)), []
    added: dict[str, str] = {}
    rejected: list[PolicyError] = []
    for credential in each(credentials):
        error = _credential_error(ref, credential)
        if error is None and credential.username in owners:
            error = _conflict(ref, credential, owners[credential.username])
        elif error is None and credential.username in added:
            error = _conflict(ref, credential, ref)
        if error is not None:
            rejected.append(error)
            continue
        password = credential.password
        added[credential.username] = password.reveal() if credential.scheme else sha_hash(password)
    return added, rejected


def _render(
    hashes: dict[str, str], owners: Mapping[str, PolicyRef], errors: list[PolicyError]
) -> tuple[str, set[PolicyRef]]:
    """The table's text, and the policies left out of it. Every entry was checked on the
    way in; should one still break a rule of Envoy's (a bug), the policies that brought
    such entries are left out, not the table: Envoy would reject the whole listener for
    one bad line."""
    try:
        return render(hashes), set()
    except EnvoyWouldReject as error:
        broken = {owners[name] for name, value in hashes.items() if not envoy_line_ok(name, value)}
        for ref in sorted(broken):
            errors.append(internal_error(ref, "users", error))
        return render({n: v for n, v in hashes.items() if owners[n] not in broken}), broken


def _field(credentials: Credentials) -> str:
    return credentials.password_field or "spec"


def _in_bulk(credentials: Credentials, owners: Mapping[str, PolicyRef]) -> bool:
    """The common case: every user valid, plain, new and listed once; hashed as a column.

    Anything else goes user by user, so each problem gets its own error.
    """
    names = credentials.usernames
    distinct = set(names)
    return (
        credentials.kind is not CredentialKind.HASHED
        and len(distinct) == len(names)
        and owners.keys().isdisjoint(distinct)
        and all_plain(names, credentials.passwords.reveal(), credentials.kind)
    )


def each(credentials: Credentials) -> list[Credential]:
    """The column as one Credential per user, with the hash scheme of each stored value."""
    kind, names = credentials.kind, credentials.usernames
    return [
        Credential(
            name,
            Secret(value),
            credentials.username_field,
            credentials.password_field,
            None if kind is CredentialKind.PLAIN else scheme_of(value, kind),
        )
        for name, value in zip(names, credentials.passwords.reveal(), strict=True)
    ]


def _credential_error(ref: PolicyRef, credential: Credential) -> PolicyError | None:
    problem = username_problem(credential.username)
    if problem is not None:
        return InvalidUsernameError(
            ref,
            credential.username_field,
            f"user name {describe(credential.username)} {problem}",
            "choose a user name of printable characters without ':'",
        )
    if credential.scheme is not None:
        return _hash_error(ref, credential)
    problem = password_problem(credential.password)
    if problem is not None:
        return InvalidPasswordError(
            ref,
            credential.password_field,
            f"the password of user {describe(credential.username)} {problem}",
            "set a non-empty password of printable characters",
        )
    return None


def _hash_error(ref: PolicyRef, credential: Credential) -> PolicyError | None:
    user, scheme = describe(credential.username), credential.scheme or ""
    if scheme != SHA_SCHEME:
        return UnsupportedHashError(
            ref,
            credential.password_field,
            f"the stored value for user {user} is a hash Envoy cannot verify: "
            f"{scheme_label(scheme)}",
            "Envoy only verifies {SHA} (unsalted SHA-1) hashes: store a {SHA} hash "
            "or the password itself",
        )
    problem = sha_hash_problem(credential.password)
    if problem is not None:
        return UnsupportedHashError(
            ref,
            credential.password_field,
            f"the stored {{SHA}} value for user {user} {problem}",
            "store the output of `htpasswd -nbs USER PASSWORD` after the ':'",
        )
    return None


def _conflict(ref: PolicyRef, credential: Credential, winner: PolicyRef) -> ConflictError:
    if winner == ref:
        problem = f"user {describe(credential.username)} is listed twice"
        fix = "list each user once"
    else:
        problem = f"user {describe(credential.username)} is already defined by policy {winner}"
        fix = "the older policy wins; rename the user or remove it from one policy"
    return ConflictError(ref, credential.username_field, problem, fix)


def choose_header(policies: Sequence[Policy], default: str) -> tuple[str, tuple[PolicyError, ...]]:
    """The forwarded-username header for a set of policies, and the policies overruled."""
    chosen: Policy | None = None
    errors: list[PolicyError] = []
    for policy in sorted(policies, key=lambda policy: policy.precedence):
        header = policy.forward_username_header
        if header is None:
            continue
        if chosen is None:
            chosen = policy
        elif header.lower() != str(chosen.forward_username_header).lower():
            errors.append(
                ConflictError(
                    policy.ref,
                    "spec.forwardUsernameHeader",
                    f"{header!r} differs from {chosen.forward_username_header!r} "
                    f"set by policy {chosen.ref} on the same listener",
                    "the older policy's header is used; set the same header in both",
                )
            )
    if chosen is None or chosen.forward_username_header is None:
        return default, tuple(errors)
    return chosen.forward_username_header, tuple(errors)
