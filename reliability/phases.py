"""The soak's schedule: which fault each phase puts on which stand-in, and takes off again.

Faults on one store are separated by a phase in which that store is healthy, so each
one starts from a fresh cache and its stale window is measured from its own start.
Revocation and AWS's own outage sit back to back on purpose: the revoked secret comes
back just as AWS goes down, so nothing fresh is cached for it (the Timeline knows).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reliability.expect import Settings
from reliability.faults import INTERNAL_ERROR, THROTTLED, FaultProxy
from reliability.scenario import Scenario
from tests.support.aws import MotoServer
from tests.support.vault import RawJson, VaultStandIn

SLOW_BELOW = 0.4  # x --backend-timeout: slow, but every request still succeeds
SLOW_ABOVE = 2.0  # x --backend-timeout: every request times out


@dataclass
class Stands:
    """The stores the server talks to, and the soak's own direct line to moto."""

    vault: VaultStandIn
    moto: MotoServer
    proxy: FaultProxy  # the server's --aws-endpoint-url
    scenario: Scenario
    settings: Settings
    setup: Any = None  # a boto3 Secrets Manager client straight to moto (no faults)

    def revocable(self) -> tuple[str, str]:
        """The KV v2 path and the AWS name of the secrets revoked mid-run."""
        prefix = f"gateways/{self.scenario.namespace}/soak"
        return f"{prefix}/vault-revocable", f"{prefix}/aws-revocable"


Action = Callable[[Stands], object]  # what it returns is ignored


def _nothing(_: Stands) -> None:
    return None


@dataclass(frozen=True)
class Phase:
    name: str
    weight: float  # share of the run
    fault: str  # what is done, for the report
    allows: str  # what the semantics allow meanwhile, for the report
    start: Action = _nothing
    end: Action = _nothing
    outage: str | None = None  # the store that fails during the phase
    revokes: Callable[[Stands], tuple[str, ...]] = field(default=lambda _: ())


def _set(target: str, attribute: str, value: Callable[[Stands], Any]) -> Action:
    def act(stands: Stands) -> None:
        setattr(getattr(stands, target), attribute, value(stands))

    return act


def _revoke(stands: Stands) -> None:
    vault_path, aws_name = stands.revocable()
    stands.vault.delete_v2(vault_path)  # soft delete: Vault answers 404
    stands.setup.delete_secret(SecretId=aws_name, RecoveryWindowInDays=7)


def _restore(stands: Stands) -> None:
    vault_path, aws_name = stands.revocable()
    stands.vault.put_v2(vault_path, stands.scenario.vault[vault_path])
    stands.setup.restore_secret(SecretId=aws_name)


def _poisoned(stands: Stands) -> dict[str, tuple[str, Any]]:
    """Secrets one team overwrites under its own prefix with what the server cannot use,
    each in another shape: key -> (store, value)."""
    prefix = f"gateways/{stands.scenario.namespace}/soak"
    deep = "[" * 5_000 + "]" * 5_000  # nested past every JSON reader's recursion limit
    return {
        f"vault:{prefix}/vault-pw": ("vault", {"password": RawJson(deep)}),
        f"vault:{prefix}/vault-sha": ("vault", {"password": "{SHA}" + "é" * 28}),
        f"aws:{prefix}/users": ("aws", '{"a":' * 5_000 + "1" + "}" * 5_000),
        f"aws:{prefix}/aws-pw": ("aws", "a password\x0bwith a control character"),
    }


def _poison(stands: Stands) -> None:
    for key, (store, value) in _poisoned(stands).items():
        name = key.split(":", 1)[1]
        if store == "vault":
            stands.vault.put_v2(name, value)
        else:
            stands.setup.put_secret_value(SecretId=name, SecretString=value)


def _cure(stands: Stands) -> None:
    for key, (store, _) in _poisoned(stands).items():
        name = key.split(":", 1)[1]
        if store == "vault":
            stands.vault.put_v2(name, stands.scenario.vault[name])
        else:
            stands.setup.put_secret_value(SecretId=name, SecretString=stands.scenario.aws[name])


def _revoked_keys(stands: Stands) -> tuple[str, ...]:
    vault_path, aws_name = stands.revocable()
    return (f"vault:{vault_path}", f"aws:{aws_name}")


STALE = "stale value until max-stale after the start, then that store's users absent"
FRESH = "every user present"


def _below(stands: Stands) -> float:
    return SLOW_BELOW * stands.settings.timeout


def _above(stands: Stands) -> float:
    return SLOW_ABOVE * stands.settings.timeout


SCHEDULE: tuple[Phase, ...] = (
    Phase("steady", 30, "none", FRESH),
    Phase(
        "poisoned", 35,
        "four secrets overwritten with what the server cannot use (JSON nested 5 000 deep in "
        "Vault and in AWS, a {SHA} value of non-ASCII text, a control character); restored at "
        "the end",
        "poisoned secrets' users present at most one TTL, then absent; all other users "
        "present; every call answered",
        _poison, _cure, revokes=lambda stands: tuple(_poisoned(stands)),
    ),
    Phase(
        "vault-slow-below", 30, f"Vault answers after {SLOW_BELOW:g} x timeout", FRESH,
        _set("vault", "delay", _below), _set("vault", "delay", lambda _: 0.0),
    ),
    Phase(
        "vault-slow-above", 40, f"Vault answers after {SLOW_ABOVE:g} x timeout", STALE,
        _set("vault", "delay", _above), _set("vault", "delay", lambda _: 0.0), "vault",
    ),
    Phase(
        "aws-slow-below", 30, f"AWS answers after {SLOW_BELOW:g} x timeout (proxy)", FRESH,
        _set("proxy", "delay", _below), _set("proxy", "delay", lambda _: 0.0),
    ),
    Phase(
        "aws-slow-above", 40, f"AWS answers after {SLOW_ABOVE:g} x timeout (proxy)", STALE,
        _set("proxy", "delay", _above), _set("proxy", "delay", lambda _: 0.0), "aws",
    ),
    Phase(
        "vault-sealed", 40, "Vault sealed: 503 to everything", STALE,
        _set("vault", "sealed", lambda _: True), _set("vault", "sealed", lambda _: False), "vault",
    ),
    Phase(
        "aws-5xx", 40, "AWS answers 500 InternalServiceError (proxy)", STALE,
        _set("proxy", "error", lambda _: INTERNAL_ERROR), _set("proxy", "error", lambda _: None),
        "aws",
    ),
    Phase(
        "vault-rate-limited", 40, "Vault answers 429 (rate limit quota)", STALE,
        _set("vault", "rate_limited", lambda _: True),
        _set("vault", "rate_limited", lambda _: False), "vault",
    ),
    Phase(
        "aws-throttled", 40, "AWS answers 400 ThrottlingException (proxy)", STALE,
        _set("proxy", "error", lambda _: THROTTLED), _set("proxy", "error", lambda _: None),
        "aws",
    ),
    Phase(
        "vault-stopped", 40, "Vault stopped (connection refused), restarted on its port at the end",
        STALE, lambda s: s.vault.stop(), lambda s: s.vault.start(), "vault",
    ),
    Phase(
        "aws-refused", 40, "the AWS endpoint refuses connections (proxy closed), reopened after",
        STALE, lambda s: s.proxy.stop(), lambda s: s.proxy.start(), "aws",
    ),
    Phase(
        "revoked", 35,
        "one Vault secret soft-deleted (404) and one AWS secret deleted; restored at the end",
        "revoked secrets' users present at most one TTL, then absent; all other users present",
        _revoke, _restore, revokes=_revoked_keys,
    ),
    Phase(
        "aws-stopped", 40, "moto stopped (the proxy drops connections), restarted at the end",
        STALE, lambda s: s.moto.stop(), lambda s: s.moto.start(), "aws",
    ),
    Phase("recovery", 45, "none", FRESH + " (after a remembered failure expires)"),
)  # fmt: skip


def durations(total: float) -> list[float]:
    """Each phase's seconds, in proportion to its weight, `total` in all."""
    weight = sum(phase.weight for phase in SCHEDULE)
    return [total * phase.weight / weight for phase in SCHEDULE]
