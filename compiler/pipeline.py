"""One hook call, start to finish: parse -> resolve -> compile -> apply.

Nothing here raises for a bad policy: every problem becomes a PolicyError in the result,
the policy (or entry) is left out, and the listener stays protected.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from compiler.errors import PolicyError, TooLargeError
from compiler.htpasswd import SHA_LENGTH
from compiler.listener import ApplyReport, ChainAuth, apply, chains_with_managers
from compiler.memo import IdentityMemo
from compiler.model import CompileOptions, Policy, PolicyRef, UnprotectedMode
from compiler.parse import IgnoredResource, parse_resources
from compiler.scope import applies_to_chain
from compiler.users import Resolved, UserTable, choose_header, compile_users


class Resolver(Protocol):
    """Step 2 (resolve) is the backends' job: each policy's credentials, or its PolicyError."""

    def resolve_all(self, policies: Sequence[Policy]) -> list[Resolved]: ...


DEFAULT_OPTIONS = CompileOptions()
MEMO_BUDGET = 64 * 1024 * 1024  # bytes of compiled tables, and of listeners, kept for reuse


@dataclass(frozen=True)
class PolicySet:
    """The extension resources of one call, parsed and resolved."""

    resolved: tuple[Resolved, ...]
    malformed: tuple[PolicyError, ...]
    ignored: tuple[IgnoredResource, ...]

    @property
    def attached(self) -> bool:
        """Whether any policy of ours is attached, readable or not: then protect."""
        return bool(self.resolved or self.malformed)

    @property
    def refs(self) -> tuple[PolicyRef, ...]:
        return tuple(sorted(item.policy.ref for item in self.resolved))

    def leaving_out(self, item: Resolved, error: PolicyError) -> PolicySet:
        """The same set with `item`'s users denied, for `error`."""
        resolved = tuple(
            Resolved(other.policy, error=error) if other is item else other
            for other in self.resolved
        )
        return PolicySet(resolved, self.malformed, self.ignored)


@dataclass(frozen=True)
class ListenerResult:
    listener: Any
    policies: PolicySet
    errors: tuple[PolicyError, ...]
    users: int
    report: ApplyReport
    # Valid policies that govern none of the listener's HTTP connection managers: attached,
    # yet protecting nothing here (their targetRefs match no chain). A finding to report,
    # not an error: the call and the listener are unaffected.
    applies_to_nothing: tuple[PolicyRef, ...] = ()


@dataclass(frozen=True)
class ParsedPolicies:
    """Step 1 for one call: our policies, the broken ones, and the objects of other kinds."""

    policies: tuple[Policy, ...]
    malformed: tuple[PolicyError, ...]
    ignored: tuple[IgnoredResource, ...]


def parse_policies(raw: Sequence[bytes], sources: Sequence[str] | None = None) -> ParsedPolicies:
    """Step 1: parse every resource; a bad one becomes its PolicyError."""
    policies: list[Policy] = []
    malformed: list[PolicyError] = []
    ignored: list[IgnoredResource] = []
    for parsed in parse_resources(raw, sources):
        if isinstance(parsed, IgnoredResource):
            ignored.append(parsed)
        elif isinstance(parsed, PolicyError):
            malformed.append(parsed)
        else:
            policies.append(parsed)
    return ParsedPolicies(tuple(policies), tuple(malformed), tuple(ignored))


def resolve_policies(parsed: ParsedPolicies, resolver: Resolver) -> PolicySet:
    """Step 2: every policy's credentials (or the error that stopped them)."""
    resolved = resolver.resolve_all(parsed.policies)
    return PolicySet(tuple(resolved), parsed.malformed, parsed.ignored)


def load_policies(
    raw: Sequence[bytes], resolver: Resolver, sources: Sequence[str] | None = None
) -> PolicySet:
    """Steps 1 and 2: parse every resource, resolve every policy's credentials."""
    return resolve_policies(parse_policies(raw, sources), resolver)


def compile_listener(
    listener: Any,
    policies: PolicySet,
    options: CompileOptions = DEFAULT_OPTIONS,
    max_bytes: int | None = None,
) -> ListenerResult:
    """Steps 3 and 4 for one listener: a table per distinct set of applicable policies.

    With `max_bytes`, the listener returned is at most that large: while it is larger,
    the policy that adds the most to it is left out (its users denied, a TooLargeError
    saying why), so that an answer never exceeds the message limit because of one team's
    user list. The listener stays protected whatever is left out. Only a listener too
    large without any user is returned larger (the caller's to refuse).

    Unchanged input gives the very same result objects as the previous call (compiler.memo),
    so a warm call costs about the same for ten users as for a hundred thousand.
    """
    digest = _digest(listener)
    left_out: list[TooLargeError] = []
    while True:
        compiled = _compiled(listener, digest, policies, options)
        size = int(compiled.listener.ByteSize())
        if max_bytes is None or size <= max_bytes:
            break
        victim = _largest(listener, policies)
        if victim is None:
            break
        left_out.append(_too_large(victim, listener, size, max_bytes))
        policies = policies.leaving_out(victim, left_out[-1])
    errors: dict[str, PolicyError] = {str(error): error for error in policies.malformed}
    for table in compiled.tables:
        errors.update((str(error), error) for error in table.errors)
    users = max((table.users for table in compiled.tables), default=0)
    return ListenerResult(
        compiled.listener,
        policies,
        tuple(errors.values()),
        users,
        compiled.report,
        compiled.applies_to_nothing,
    )


def _compiled(
    listener: Any, digest: bytes, policies: PolicySet, options: CompileOptions
) -> _Compiled:
    return _CALLS.get(
        policies.resolved,
        (digest, options, bool(policies.malformed)),
        lambda: _compile(listener, digest, policies, options),
    )


def _largest(listener: Any, policies: PolicySet) -> Resolved | None:
    """The policy whose users add the most bytes to the listener: their lines, once per
    chain it governs. Ties: the most recent policy (the oldest keeps its place, as in
    conflicts). None when no policy adds a user."""
    chains = chains_with_managers(listener)
    weights = [
        (
            _table_bytes(item) * sum(applies_to_chain(item.policy, *chain) for chain in chains),
            item.policy.precedence,
            item,
        )
        for item in policies.resolved
        if item.error is None and len(item.credentials)
    ]
    weighed = [entry for entry in weights if entry[0] > 0]
    if not weighed:
        return None
    return max(weighed, key=lambda entry: entry[:2])[2]


def _table_bytes(item: Resolved) -> int:
    """The bytes a policy's users take in a table: `name:{SHA}<28>\n` each."""
    names = item.credentials.usernames
    return sum(map(len, names)) + len(names) * (SHA_LENGTH + 2)


def _too_large(victim: Resolved, listener: Any, size: int, limit: int) -> TooLargeError:
    users = len(victim.credentials)
    return TooLargeError(
        victim.policy.ref,
        victim.credentials.username_field or "spec",
        f"its {users} users were left out of listener {listener.name}: with them the "
        f"answer is {size} bytes, over the {limit}-byte message limit",
        "raise --max-message-size on the server and maxMessageSize in Envoy Gateway's "
        "extensionManager together, or spread the users over several policies and listeners",
    )


@dataclass(frozen=True)
class _Compiled:
    listener: Any
    report: ApplyReport
    tables: tuple[ChainTable, ...]
    applies_to_nothing: tuple[PolicyRef, ...]


def _compile(
    listener: Any, digest: bytes, policies: PolicySet, options: CompileOptions
) -> _Compiled:
    passthrough = options.unprotected is UnprotectedMode.PASSTHROUGH and not policies.malformed
    tables: dict[tuple[int, ...], ChainTable] = {}
    auths: dict[tuple[str | None, bool], ChainAuth | None] = {}
    governing: set[int] = set()
    for chain in chains_with_managers(listener):
        chosen = tuple(
            index
            for index, item in enumerate(policies.resolved)
            if applies_to_chain(item.policy, *chain)
        )
        governing.update(chosen)
        if not chosen and passthrough:
            auths[chain] = None
            continue
        if chosen not in tables:
            picked = [policies.resolved[i] for i in chosen]
            tables[chosen] = _TABLES.get(picked, options, partial(compile_chain, picked, options))
        auths[chain] = tables[chosen].auth
    result, report = _LISTENERS.get(
        [auth for auth in auths.values() if auth is not None],
        (digest, tuple(auth is not None for auth in auths.values())),
        lambda: apply(listener, lambda name, is_default: auths[(name, is_default)]),
    )
    unused = _applying_to_nothing(policies.resolved, governing) if auths else ()
    return _Compiled(result, report, tuple(tables.values()), unused)


def _applying_to_nothing(
    resolved: Sequence[Resolved], governing: set[int]
) -> tuple[PolicyRef, ...]:
    """The valid policies no HTTP chain chose: most likely a targetRef that names another
    Gateway, section or namespace, so the operator believes something is protected that
    is not. Only asked when the listener has a manager: a tcp_proxy-only listener of the
    same Gateway gets the Gateway's policies too, and there is nothing to protect there.
    Rejected policies are left out: they are reported already.
    """
    return tuple(
        sorted(
            {
                item.policy.ref
                for index, item in enumerate(resolved)
                if item.error is None and index not in governing
            }
        )
    )


def _digest(listener: Any) -> bytes:
    return hashlib.blake2b(listener.SerializeToString(deterministic=True), digest_size=16).digest()


@dataclass(frozen=True)
class ChainTable:
    """The basic_auth settings for one set of policies, and what was left out of them."""

    auth: ChainAuth
    errors: tuple[PolicyError, ...]
    users: int


def compile_chain(resolved: Sequence[Resolved], options: CompileOptions) -> ChainTable:
    table: UserTable = compile_users(resolved)
    header, header_errors = choose_header(
        [item.policy for item in resolved if item.error is None],
        options.default_forward_username_header,
    )
    return ChainTable(ChainAuth(table.htpasswd, header), table.errors + header_errors, table.users)


_TABLES: IdentityMemo[ChainTable] = IdentityMemo(
    MEMO_BUDGET, lambda table: len(table.auth.htpasswd)
)
_LISTENERS: IdentityMemo[tuple[Any, ApplyReport]] = IdentityMemo(
    MEMO_BUDGET, lambda result: int(result[0].ByteSize())
)
# Whole calls: the same listener with the same resolved policies. Sized like _LISTENERS.
_CALLS: IdentityMemo[_Compiled] = IdentityMemo(
    MEMO_BUDGET, lambda compiled: int(compiled.listener.ByteSize())
)
