"""What one answer reports: log lines per policy, counted rejections, and when to repeat them.

Envoy Gateway sends the same listener with the same policies on every translation, and a
broken policy rides along with every listener of its Gateway. Its lines are logged when an
answer is first built, and then at most once per REPEAT_INTERVAL for the same content
(whichever listener carries it, fresh or reused): one policy with ten thousand broken
entries costs one line, naming the first few, not ten thousand lines per call. The
rejection counters count every call, so a rate over them reads as "rejections happening
now".
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cachetools import TTLCache
from prometheus_client import Counter as PromCounter

from compiler.errors import InternalPolicyError, PolicyError
from compiler.model import PasswordFrom, Policy, PolicyRef, UsersFrom
from compiler.pipeline import ChainTable, ListenerResult, PolicySet
from compiler.scope import ChainName
from compiler.translation import HostTable
from compiler.users import Resolved
from server.outcomes import Admission, ListenerOutcome, PolicyIdentity, Rejection, Source

ENTRIES_NAMED = 3  # a policy's rejected entries named in its line; the rest are counted
POLICIES_NAMED = 20  # policies named in one line; the rest are counted
REPEAT_INTERVAL = 300.0  # seconds before the same line is logged again
REPEATS_HELD = 10_000  # distinct lines remembered; older ones may be logged again sooner

POLICY_REJECTIONS = PromCounter(
    "extension_server_policy_rejections",
    "Policies left out of a hook call's answer (all their users denied), per call, by reason.",
    ["reason"],
)
ENTRY_REJECTIONS = PromCounter(
    "extension_server_entry_rejections",
    "Single entries (users) left out of a hook call's answer, per call, by reason.",
    ["reason"],
)

Fields = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class LogEvent:
    """One line an answer logs; `key` tells the same content apart from any other."""

    level: str  # the logger method: "info", "warning", "error"
    event: str
    fields: Fields
    key: Hashable


@dataclass(frozen=True)
class Rejections:
    """How many policies and entries an answer left out, by reason: counted at every call."""

    policies: tuple[tuple[str, int], ...] = ()
    entries: tuple[tuple[str, int], ...] = ()

    def count(self) -> None:
        for reason, number in self.policies:
            POLICY_REJECTIONS.labels(reason).inc(number)
        for reason, number in self.entries:
            ENTRY_REJECTIONS.labels(reason).inc(number)


NO_REJECTIONS = Rejections()


def summarize(refs: Sequence[PolicyRef], limit: int = POLICIES_NAMED) -> str:
    """`ns/a,ns/b,...(+N more)`: bounded, so one log line stays readable."""
    shown = ",".join(str(ref) for ref in refs[:limit]) or "-"
    hidden = len(refs) - limit
    return f"{shown},...(+{hidden} more)" if hidden > 0 else shown


def whole_policy_errors(policies: PolicySet) -> list[PolicyError]:
    """The errors that left a whole policy out (its users all denied)."""
    return [*policies.malformed, *(item.error for item in policies.resolved if item.error)]


def rejections(result: ListenerResult) -> Rejections:
    whole = whole_policy_errors(result.policies)
    policies = Counter(error.reason for error in whole)
    entries: Counter[str] = Counter()
    seen = set(whole)  # errors compare (and hash) as themselves: PolicyError has eq=False
    for error in result.errors:
        if error in seen:
            continue
        (policies if isinstance(error, InternalPolicyError) else entries)[error.reason] += 1
    return Rejections(tuple(sorted(policies.items())), tuple(sorted(entries.items())))


def answer_events(listener: str, result: ListenerResult) -> tuple[LogEvent, ...]:
    """Every line an answer logs: one per rejected policy (its entries summarised), and the
    findings about the listener."""
    events = [
        LogEvent(
            "error",
            "listener.undecodable_manager",
            (("listener", listener), ("filter_chain", chain)),
            ("listener.undecodable_manager", listener, chain),
        )
        for chain in result.report.undecodable
    ]
    events += [
        LogEvent(
            "info",
            "policy.ignored",
            (
                ("listener", listener),
                ("kind", ignored.kind),
                ("api_version", ignored.api_version),
                ("resource", str(ignored.ref)),
            ),
            ("policy.ignored", ignored),
        )
        for ignored in result.policies.ignored
    ]
    whole = whole_policy_errors(result.policies)
    events += [_policy_rejected(listener, error) for error in _unique(whole)]
    seen = set(whole)
    entries = [error for error in result.errors if error not in seen]
    by_policy: dict[PolicyRef, list[PolicyError]] = {}
    for error in entries:
        by_policy.setdefault(error.policy, []).append(error)
    events += [
        _entries_rejected(listener, ref, errors) for ref, errors in sorted(by_policy.items())
    ]
    if result.applies_to_nothing:
        events.append(
            LogEvent(
                "warning",
                "policy.applies_to_nothing",
                (
                    ("listener", listener),
                    ("policies", summarize(result.applies_to_nothing)),
                    ("policy_count", len(result.applies_to_nothing)),
                ),
                ("policy.applies_to_nothing", listener, result.applies_to_nothing),
            )
        )
    if result.other_namespace:
        events.append(
            LogEvent(
                "warning",
                "policy.other_namespace_skipped",
                (
                    ("listener", listener),
                    ("policies", summarize(result.other_namespace)),
                    ("policy_count", len(result.other_namespace)),
                ),
                ("policy.other_namespace_skipped", listener, result.other_namespace),
            )
        )
    return tuple(events)


def _policy_rejected(listener: str, error: PolicyError) -> LogEvent:
    return LogEvent(
        "warning",
        "policy.rejected",
        (
            ("listener", listener),
            ("policy", str(error.policy)),
            ("field", error.field),
            ("error", str(error)),
            ("reason", error.reason),
        ),
        ("policy.rejected", str(error)),
    )


def _entries_rejected(listener: str, ref: PolicyRef, errors: Sequence[PolicyError]) -> LogEvent:
    reasons = Counter(error.reason for error in errors)
    named = [str(error) for error in errors[:ENTRIES_NAMED]]
    return LogEvent(
        "warning",
        "policy.entries_rejected",
        (
            ("listener", listener),
            ("policy", str(ref)),
            ("entries", len(errors)),
            ("reasons", ",".join(f"{reason}={n}" for reason, n in sorted(reasons.items()))),
            ("errors", " | ".join(named)),
            ("not_shown", len(errors) - len(named)),
        ),
        ("policy.entries_rejected", str(ref), len(errors), tuple(named)),
    )


def _unique(errors: Iterable[PolicyError]) -> list[PolicyError]:
    seen: dict[str, PolicyError] = {}
    for error in errors:
        seen.setdefault(str(error), error)
    return list(seen.values())


class RepeatFilter:
    """Lets a line through once per interval per key; thread-safe, bounded."""

    def __init__(self, interval: float = REPEAT_INTERVAL, held: int = REPEATS_HELD) -> None:
        self._seen: TTLCache[Hashable, bool] = TTLCache(held, interval)
        self._lock = threading.Lock()

    def allow(self, key: Hashable) -> bool:
        with self._lock:
            if key in self._seen:
                return False
            self._seen[key] = True
            return True


def listener_outcome(listener: str, result: ListenerResult) -> ListenerOutcome:
    """What one freshly compiled answer decided, for Kubernetes Events and the audit trail:
    who each policy admits on each filter chain, and what was left out. User names, policy
    names and store versions only."""
    resolved = {item.policy.ref: item for item in result.policies.resolved}
    admissions = []
    for chain in result.chains:
        if chain.table is None:
            continue
        place = ChainName.parse(chain.name)
        gateway = f"{place.namespace}/{place.gateway}" if place else None
        section = place.section if place else None
        admissions += _admissions(listener, gateway, section, chain.table, resolved)
    whole = whole_policy_errors(result.policies)
    seen = set(whole)
    uids = {ref: item.policy.uid for ref, item in resolved.items()}
    rejections = [
        Rejection.of(
            error,
            uid=uids.get(error.policy),
            whole_policy=error in seen or isinstance(error, InternalPolicyError),
            outcome=getattr(error, "outcome", None),
        )
        for error in _unique([*whole, *result.errors])
        if not error.policy.namespace.startswith("<")  # no object to tell: unreadable bytes
    ]
    return ListenerOutcome(listener, tuple(admissions), tuple(rejections))


def virtual_host_outcome(
    routes: str, hosts: Sequence[HostTable], policies: PolicySet
) -> ListenerOutcome:
    """Who each policy admits on the virtual hosts of each Gateway listener of one route
    configuration (the Translation hook). Its own ledger, named after the route
    configuration: the listeners' outcomes (their chains' tables) stay what the
    HTTPListener hook reports too, so the two hooks never undo each other's news."""
    resolved = {item.policy.ref: item for item in policies.resolved}
    admissions = [
        admission
        for host in hosts
        for admission in _admissions(
            routes,
            f"{host.listener.namespace}/{host.listener.name}",
            host.listener.section,
            host.table,
            resolved,
        )
    ]
    return ListenerOutcome(routes, tuple(admissions), ())


def _admissions(
    listener: str,
    gateway: str | None,
    section: str | None,
    table: ChainTable,
    resolved: dict[PolicyRef, Resolved],
) -> list[Admission]:
    """Who each policy admits through one table, at one place."""
    names: dict[PolicyRef, list[str]] = {}
    for user, ref in table.owners.items():
        names.setdefault(ref, []).append(user)
    return [
        Admission(
            listener,
            gateway,
            section,
            identity(resolved[ref].policy),
            frozenset(users),
            source_of(resolved[ref]),
        )
        for ref, users in sorted(names.items())
    ]


def identity(policy: Policy) -> PolicyIdentity:
    return PolicyIdentity(policy.ref.namespace, policy.ref.name, policy.uid)


def source_of(item: Resolved) -> Source | None:
    """The stored secret (and version) a policy's users came from; None for spec.password."""
    spec = item.policy.credentials
    if not isinstance(spec, PasswordFrom | UsersFrom) or item.error is not None:
        return None
    return Source(spec.store.store, spec.store.name, item.source[-1])
