"""Who is admitted where, and what changed since the last answer for the same listener.

The Events on a policy (server/events.py) and the audit trail (server/audit.py) both tell
changes of access, not answers: Envoy Gateway sends the same listener on every
translation, and only a difference from the last outcome seen for that listener is news.
Each observer keeps its own ledger on its own thread.

The first outcome of a listener since the server started is its baseline: a `snapshot`
per policy and place, not a grant, because the server cannot tell whether those users were
just admitted or have been for months. A listener that stops being sent is not a removal
(Envoy Gateway may simply not have translated since): only a later outcome for the same
listener shows what left.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from server.outcomes import ListenerOutcome, PolicyIdentity, Rejection, Source

SNAPSHOT = "snapshot"  # the baseline: what a listener admits when first seen
GRANTED = "granted"  # users added, none removed
REVOKED = "revoked"  # users removed, none added
CHANGED = "changed"  # users added and removed, or the same users from another secret
ROTATED = "rotated"  # the same users from a new version of the same secret
MAX_LISTENERS = 10_000  # listeners remembered; an older one is a baseline again when it returns


@dataclass(frozen=True, order=True)
class Place:
    """Where users are admitted: a Gateway listener (section), or an Envoy listener."""

    gateway: str  # "<namespace>/<name>", "" when the chain name does not say
    section: str  # "" when the chain name does not say
    listener: str

    def __str__(self) -> str:
        if self.gateway and self.section:
            return f"Gateway {self.gateway} listener {self.section}"
        if self.gateway:
            return f"Gateway {self.gateway}"
        return f"Envoy listener {self.listener}"


@dataclass(frozen=True)
class AccessChange:
    """What one policy admits at one place now, against what it admitted there before."""

    change: str  # SNAPSHOT, GRANTED, REVOKED, CHANGED or ROTATED
    place: Place
    policy: PolicyIdentity
    added: tuple[str, ...]  # sorted; for a snapshot, every user
    removed: tuple[str, ...]  # sorted
    users: frozenset[str]  # admitted after the change
    source: Source | None  # where they come from now (None: spec.password, or nothing)
    previous: Source | None  # where they came from before, when that differs
    cause: Rejection | None  # for removals: the outcome's rejection of that policy, if any


@dataclass(frozen=True)
class _Held:
    users: frozenset[str]
    source: Source | None


_Key = tuple[Place, tuple[str, str, str]]
_NOBODY: frozenset[str] = frozenset()


class AccessLedger:
    """The last outcome of each listener, by place and policy; `apply` returns the changes."""

    def __init__(self, max_listeners: int = MAX_LISTENERS) -> None:
        self._max = max_listeners
        self._listeners: OrderedDict[str, dict[_Key, tuple[PolicyIdentity, _Held]]] = OrderedDict()

    def apply(self, outcome: ListenerOutcome) -> list[AccessChange]:
        now = _held(outcome)
        before = self._listeners.pop(outcome.listener, None)
        self._listeners[outcome.listener] = now
        while len(self._listeners) > self._max:
            self._listeners.popitem(last=False)
        if before is None:
            return [
                AccessChange(SNAPSHOT, key[0], policy, tuple(sorted(held.users)), (),
                             held.users, held.source, None, None)
                for key, (policy, held) in sorted(now.items())
                if held.users
            ]  # fmt: skip
        changes = []
        for key in sorted(before.keys() | now.keys()):
            change = _compare(key[0], before.get(key), now.get(key), outcome)
            if change is not None:
                changes.append(change)
        return changes


def _held(outcome: ListenerOutcome) -> dict[_Key, tuple[PolicyIdentity, _Held]]:
    """The outcome's admissions by place and policy (several chains of one place: together)."""
    found: dict[_Key, tuple[PolicyIdentity, _Held]] = {}
    for admission in outcome.admissions:
        place = Place(admission.gateway or "", admission.section or "", outcome.listener)
        policy = admission.policy
        key = (place, (policy.namespace, policy.name, policy.uid or ""))
        if key in found:
            held = found[key][1]
            source = held.source or admission.source
            found[key] = (policy, _Held(held.users | admission.users, source))
        else:
            found[key] = (policy, _Held(admission.users, admission.source))
    return found


def _compare(
    place: Place,
    before: tuple[PolicyIdentity, _Held] | None,
    after: tuple[PolicyIdentity, _Held] | None,
    outcome: ListenerOutcome,
) -> AccessChange | None:
    policy = (after or before or (None, None))[0]
    assert policy is not None
    old = before[1] if before else _Held(_NOBODY, None)
    new = after[1] if after else _Held(_NOBODY, None)
    same_users = old.users is new.users or old.users == new.users
    if same_users and (old.source == new.source or not new.users):
        return None
    added = tuple(sorted(new.users - old.users))
    removed = tuple(sorted(old.users - new.users))
    previous = old.source if old.source != new.source else None
    if same_users:
        same_secret = (
            old.source is not None
            and new.source is not None
            and (old.source.store, old.source.secret) == (new.source.store, new.source.secret)
        )
        change = ROTATED if same_secret else CHANGED
    elif added and removed:
        change = CHANGED
    else:
        change = GRANTED if added else REVOKED
    cause = _rejection_of(policy, outcome.rejections) if removed else None
    return AccessChange(
        change, place, policy, added, removed, new.users, new.source, previous, cause
    )


def _rejection_of(policy: PolicyIdentity, rejections: tuple[Rejection, ...]) -> Rejection | None:
    """The rejection that best explains a removal: a whole-policy one first."""
    mine = [r for r in rejections if r.policy == policy]
    whole = [r for r in mine if r.whole_policy]
    return (whole or mine)[0] if mine else None


def counts(changes: Mapping[str, int]) -> str:
    """`granted=1,revoked=2`: for a log line."""
    return ",".join(f"{change}={number}" for change, number in sorted(changes.items()))
