"""One hook call, start to finish: parse -> resolve -> compile -> apply.

Nothing here raises for a bad policy: every problem becomes a PolicyError in the result,
the policy (or entry) is left out, and the listener stays protected.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from compiler.errors import PolicyError, TooLargeError
from compiler.htpasswd import SHA_LENGTH
from compiler.listener import ApplyReport, ChainAuth, apply, chains_with_managers
from compiler.memo import BoundedMemo
from compiler.model import (
    CompileOptions,
    Exemption,
    GatewayListener,
    Policy,
    PolicyRef,
    Source,
    UnprotectedMode,
    ValueKey,
)
from compiler.parse import IgnoredResource, ParsedResource, parse_resources
from compiler.scope import applies_to_chain, of_another_namespace
from compiler.users import Resolved, UserTable, choose_header, compile_users

if TYPE_CHECKING:
    from compiler.translation import TranslationResult


class Resolver(Protocol):
    """Step 2 (resolve) is the backends' job: each policy's credentials, or its PolicyError."""

    def resolve_all(self, policies: Sequence[Policy]) -> list[Resolved]: ...


DEFAULT_OPTIONS = CompileOptions()
MEMO_BUDGET = 64 * 1024 * 1024  # bytes of compiled tables, and of listeners, kept for reuse
PARSED_KEPT = 16_384  # extension resources kept parsed


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

    @property
    def keys(self) -> tuple[ValueKey, ...]:
        """What an answer compiled from this set depends on (the malformed aside, which
        come from the same bytes as the policies)."""
        return tuple(item.key for item in self.resolved)

    def leaving_out(self, item: Resolved, error: PolicyError) -> PolicySet:
        """The same set with `item`'s users denied, for `error`."""
        resolved = tuple(
            Resolved(other.policy, error=error, source=failed_source(error))
            if other is item
            else other
            for other in self.resolved
        )
        return PolicySet(resolved, self.malformed, self.ignored)


def failed_source(error: PolicyError) -> Source:
    """The source of a policy that failed: its error family and message, as a value."""
    return ("failed", type(error).__name__, str(error))


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
    # Policies of another namespace on a shared plain-HTTP default chain named after this
    # namespace's Gateway (merged Gateways): not applied there. Also a finding, not an error.
    other_namespace: tuple[PolicyRef, ...] = ()
    # Each filter chain with an HTTP connection manager, and its table (None: left as it
    # was, in passthrough): who is admitted where, for Kubernetes Events and the audit trail.
    chains: tuple[ChainResult, ...] = ()
    size: int = 0  # the listener's ByteSize


@dataclass(frozen=True)
class ChainResult:
    name: str | None
    is_default: bool
    table: ChainTable | None


@dataclass(frozen=True)
class ParsedPolicies:
    """Step 1 for one call: our policies, the broken ones, and the objects of other kinds."""

    policies: tuple[Policy, ...]
    malformed: tuple[PolicyError, ...]
    ignored: tuple[IgnoredResource, ...]


def parse_policies(raw: Sequence[bytes], sources: Sequence[str] | None = None) -> ParsedPolicies:
    """Step 1: parse every resource; a bad one becomes its PolicyError."""
    return sorted_resources(parse_resources(raw, sources))


def sorted_resources(resources: Sequence[ParsedResource]) -> ParsedPolicies:
    """Parsed resources by kind: our policies, the broken ones, objects of other kinds."""
    policies: list[Policy] = []
    malformed: list[PolicyError] = []
    ignored: list[IgnoredResource] = []
    for parsed in resources:
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
    memo: CompileMemo | None = None,
) -> ListenerResult:
    """Steps 3 and 4 for one listener: a table per distinct set of applicable policies.

    With `max_bytes`, the listener returned is at most that large: while it is larger,
    the policy that adds the most to it is left out (its users denied, a TooLargeError
    saying why), so that an answer never exceeds the message limit because of one team's
    user list. The listener stays protected whatever is left out. Only a listener too
    large without any user is returned larger (the caller's to refuse).

    With a `memo` (ListenerCompiler's), tables and listeners built before from the same
    value keys are reused, so a warm call costs about the same for ten users as for a
    hundred thousand.
    """
    memo = memo or CompileMemo.disabled()
    digest = _digest(listener)
    left_out: list[TooLargeError] = []
    while True:
        compiled = _compile(listener, digest, policies, options, memo)
        size = compiled.size
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
        compiled.other_namespace,
        compiled.chains,
        compiled.size,
    )


def _largest(listener: Any, policies: PolicySet) -> Resolved | None:
    """The policy whose users add the most bytes to the listener: their lines, once per
    chain it governs. Ties: the most recent policy (the oldest keeps its place, as in
    conflicts). None when no policy adds a user."""
    chains = chains_with_managers(listener)
    weights = [
        (
            table_bytes(item) * sum(applies_to_chain(item.policy, *chain) for chain in chains),
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


def table_bytes(item: Resolved) -> int:
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
    other_namespace: tuple[PolicyRef, ...]
    chains: tuple[ChainResult, ...]
    size: int  # the listener's ByteSize, measured once when it was built


@dataclass(frozen=True)
class _Built:
    """A listener compiled, what applying did, and its size: a warm call reuses all three
    (measuring a listener of 100,000 users costs more than the rest of the call)."""

    listener: Any
    report: ApplyReport
    size: int


def leaves_unprotected_open(policies: PolicySet, options: CompileOptions) -> bool:
    """Whether what no policy applies to stays open: `passthrough`, and no policy so
    malformed that where it applies is unknown (then everything fails closed)."""
    return options.unprotected is UnprotectedMode.PASSTHROUGH and not policies.malformed


def _compile(
    listener: Any, digest: bytes, policies: PolicySet, options: CompileOptions, memo: CompileMemo
) -> _Compiled:
    passthrough = leaves_unprotected_open(policies, options)
    tables: dict[tuple[int, ...], tuple[TableKey, ChainTable]] = {}
    plan: dict[tuple[str | None, bool], TableKey | None] = {}
    governing: set[int] = set()
    foreign: set[int] = set()
    for chain in chains_with_managers(listener):
        chosen = tuple(
            index
            for index, item in enumerate(policies.resolved)
            if applies_to_chain(item.policy, *chain)
        )
        governing.update(chosen)
        others = {
            index
            for index, item in enumerate(policies.resolved)
            if item.error is None and of_another_namespace(item.policy, *chain)
        }
        foreign.update(others)
        # Per Gateway, another namespace's policy on a shared chain protects its own
        # virtual hosts through our filter: the chain needs it even with no policy here.
        if not chosen and passthrough and not (options.per_gateway and others):
            plan[chain] = None
            continue
        if chosen not in tables:
            picked = [policies.resolved[i] for i in chosen]
            tables[chosen] = memo.table(picked, options)
        plan[chain] = tables[chosen][0]
    auths = {key: table.auth for key, table in tables.values()}
    parts = [part for key, _ in tables.values() for part in key[0]]
    scoped: tuple[ValueKey, ...] = ()
    if options.per_gateway:
        # Each Gateway listener's exemptions and hiding, on its own virtual hosts, come
        # from every policy served here, also those a chain's table leaves to the
        # virtual hosts (another namespace's, on a shared chain).
        control = _request_control(_valid(policies.resolved), True)
        auths = {key: replace(auth, **control) for key, auth in auths.items()}
        scoped = policies.keys
    built = memo.listener(
        (digest, tuple(plan.items()), scoped),
        [*parts, *scoped],
        lambda: apply(listener, lambda name, default: _auth(auths, plan[(name, default)])),
    )
    unused = _applying_to_nothing(policies.resolved, governing | foreign) if plan else ()
    # Per Gateway (the Translation hook), they reach their own virtual hosts: none skipped.
    skipped = (
        ()
        if options.per_gateway
        else tuple(sorted({policies.resolved[index].policy.ref for index in foreign}))
    )
    by_key = dict(tables.values())
    chains = tuple(
        ChainResult(name, default, None if key is None else by_key[key])
        for (name, default), key in plan.items()
    )
    compiled = tuple(table for _, table in tables.values())
    return _Compiled(built.listener, built.report, compiled, unused, skipped, chains, built.size)


def _auth(auths: dict[TableKey, ChainAuth], key: TableKey | None) -> ChainAuth | None:
    return None if key is None else auths[key]


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
    owners: Mapping[str, PolicyRef]  # user name -> the policy it was admitted by


def compile_chain(resolved: Sequence[Resolved], options: CompileOptions) -> ChainTable:
    """The table of one set of policies, and (but per Gateway, which the listener adds)
    the union of their exemptions and hiding."""
    table: UserTable = compile_users(resolved)
    valid = _valid(resolved)
    header, header_errors = choose_header(valid, options.default_forward_username_header)
    control = {} if options.per_gateway else _request_control(valid, False)
    auth = ChainAuth(table.htpasswd, header, **control)
    return ChainTable(auth, table.errors + header_errors, table.users, table.owners)


def _valid(resolved: Sequence[Resolved]) -> list[Policy]:
    """The policies that were not rejected: only they exempt or hide anything."""
    return [item.policy for item in resolved if item.error is None]


def _request_control(policies: Sequence[Policy], per_gateway: bool) -> dict[str, Any]:
    """The exemptions and credential hiding of the valid policies on a chain.

    On the whole chain, they are the union of the policies' (a policy that is rejected
    exempts nothing). Per Gateway listener, each policy's apply on the virtual hosts of
    the Gateway listeners it targets only.
    """
    if not per_gateway:
        exemptions = sorted({exemption for policy in policies for exemption in policy.exemptions})
        return {
            "exemptions": tuple(exemptions),
            "hide_credentials": any(policy.hide_credentials for policy in policies),
        }
    scoped: dict[GatewayListener, set[Exemption]] = {}
    hidden: set[GatewayListener] = set()
    for policy in policies:
        for listener in targeted(policy):
            scoped.setdefault(listener, set()).update(policy.exemptions)
            if policy.hide_credentials:
                hidden.add(listener)
    return {
        "per_gateway": tuple(
            (listener, tuple(sorted(exemptions)))
            for listener, exemptions in sorted(scoped.items(), key=lambda kv: kv[0].sort_key())
            if exemptions
        ),
        "hide_on": tuple(sorted(hidden, key=GatewayListener.sort_key)),
    }


def targeted(policy: Policy) -> list[GatewayListener]:
    """The Gateway listeners a policy targets (a section of None: the whole Gateway)."""
    return [
        GatewayListener(policy.ref.namespace, target.name, target.section_name)
        for target in policy.targets
        if target.kind == "Gateway"
    ]


# A table is known by the value keys of the policies it was compiled from, and the options.
TableKey = tuple[tuple[ValueKey, ...], CompileOptions]


@dataclass
class CompileMemo:
    """Tables and listeners compiled before, by the value keys they were built from."""

    tables: BoundedMemo[TableKey, ChainTable] | None
    listeners: BoundedMemo[Hashable, _Built] | None

    @classmethod
    def bounded(cls, budget: int = MEMO_BUDGET) -> CompileMemo:
        return cls(
            BoundedMemo(budget, lambda table: len(table.auth.htpasswd)),
            BoundedMemo(budget, lambda built: built.size),
        )

    @classmethod
    def disabled(cls) -> CompileMemo:
        """Everything compiled anew (the CLI, and tests of the pure steps)."""
        return cls(None, None)

    def table(
        self, picked: Sequence[Resolved], options: CompileOptions
    ) -> tuple[TableKey, ChainTable]:
        key: TableKey = (tuple(item.key for item in picked), options)
        held = self.tables.get(key) if self.tables is not None else None
        if held is None:
            held = compile_chain(picked, options)
            if self.tables is not None:
                self.tables.put(key, held, key[0])
        return key, held

    def listener(
        self, key: Hashable, parts: Sequence[ValueKey], make: Callable[[], tuple[Any, ApplyReport]]
    ) -> _Built:
        held = self.listeners.get(key) if self.listeners is not None else None
        if held is None:
            listener, report = make()
            held = _Built(listener, report, int(listener.ByteSize()))
            if self.listeners is not None:
                self.listeners.put(key, held, set(parts))
        return held

    def retire(self, key: ValueKey) -> None:
        """`key` was superseded (its policy changed, its secret rotated): drop what was
        built from it."""
        for memo in (self.tables, self.listeners):
            if memo is not None:
                memo.retire(key)


class ListenerCompiler:
    """The hot path's one owner of reuse: objects parsed, and tables and listeners compiled,
    each kept by value (bytes, value keys), bounded, and dropped once superseded.

    Envoy Gateway sends the same policies with every listener of every translation; one
    instance, held by the service, serves every call.
    """

    def __init__(
        self,
        resolver: Resolver,
        options: CompileOptions = DEFAULT_OPTIONS,
        budget: int = MEMO_BUDGET,
    ) -> None:
        self.options = options
        self._resolver = resolver
        self._parsed: BoundedMemo[tuple[bytes, str], ParsedResource] = BoundedMemo(PARSED_KEPT)
        self._memo = CompileMemo.bounded(budget)
        self._current: dict[PolicyRef, ValueKey] = {}
        self._lock = threading.Lock()

    def parse(self, raw: Sequence[bytes]) -> ParsedPolicies:
        """Step 1, each object parsed once for as long as it is kept."""
        parsed = []
        for index, data in enumerate(raw):
            key = (data, f"extension_resources[{index}]")
            held = self._parsed.get(key)
            if held is None:
                (held,) = parse_resources([data], [key[1]])
                self._parsed.put(key, held)
            parsed.append(held)
        return sorted_resources(parsed)

    def resolve(self, parsed: ParsedPolicies) -> PolicySet:
        """Step 2; what was built from a policy's previous value key is dropped."""
        policies = resolve_policies(parsed, self._resolver)
        with self._lock:
            for item in policies.resolved:
                key = item.key
                old = self._current.get(item.policy.ref)
                if old != key:
                    self._current[item.policy.ref] = key
                    if old is not None:
                        self._memo.retire(old)
        return policies

    def compile(self, listener: Any, policies: PolicySet, max_bytes: int | None) -> ListenerResult:
        """Steps 3 and 4."""
        return compile_listener(listener, policies, self.options, max_bytes, self._memo)

    def translate(
        self,
        listeners: Sequence[Any],
        routes: Sequence[Any],
        policies: PolicySet,
        max_bytes: int | None,
    ) -> TranslationResult:
        """Steps 3 and 4 for a whole translation (the Translation hook)."""
        from compiler.translation import compile_translation  # noqa: PLC0415 (it imports us)

        return compile_translation(listeners, routes, policies, self.options, max_bytes, self._memo)
