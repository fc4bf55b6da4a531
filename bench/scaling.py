"""Section 2: compile time and output size from 10 to 100 000 users, in process (no gRPC)."""

from __future__ import annotations

import base64
import gc
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backends import CredentialResolver, ResolverSettings
from backends.stores import StoredSecret
from bench.context import Context
from bench.fixtures import store_policy
from bench.results import Row, Section, median, ms, ratio, size, us
from compiler.model import StoreRef
from compiler.pipeline import ListenerCompiler
from tests.support.builders import http_listener

TITLE = "2. Compile scaling (in process)"
SIZES = (10, 1_000, 10_000, 100_000)
COLD_10K_TARGET = 0.050  # seconds
WARM_SPREAD = 0.10  # warm calls within 10 % of the 10-user warm call
WARM_ROUNDS = (
    40  # turns of warm calls over all sizes (they take tens of µs: many, for a stable median)
)
WARM_CALLS_PER_TURN = 5
LINEAR_SLACK = 1.15  # per-user cold cost may rise this much from one size to the next (noise)
NAMESPACE = "default"
PATH = f"secret/data/gateways/{NAMESPACE}/bench-users"


class MemoryStore:
    """A secret store that answers from memory: one `usersFrom` map of user -> password."""

    name = "vault"

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        self.fetches = 0

    def fetch(self, ref: StoreRef) -> StoredSecret:
        self.fetches += 1
        return StoredSecret(self.users, "1")

    def version(self, ref: StoreRef) -> str:
        return "1"

    def close(self) -> None:
        pass


def users_of(count: int) -> dict[str, str]:
    return {f"user-{index:06d}": f"password-{index:06d}-of-{count}" for index in range(count)}


def runs_for(count: int, quick: bool) -> int:
    if quick:
        return 1 if count >= 100_000 else 3
    return {10: 41, 1_000: 21, 10_000: 15, 100_000: 7}[count]


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def hash_alone(passwords: list[str]) -> list[bytes]:
    """The baseline: what Envoy's {SHA} costs with nothing around it."""
    sha1, encode = hashlib.sha1, base64.b64encode
    return [encode(sha1(password.encode()).digest()) for password in passwords]


@dataclass(frozen=True)
class Measured:
    count: int
    runs: int
    cold: float  # median seconds
    warm: float
    hashing: float  # the baseline
    output: int  # listener ByteSize
    table: int  # bytes of the bare htpasswd text


@dataclass(frozen=True)
class Cold:
    count: int
    runs: int
    seconds: float  # median
    hashing: float
    output: int
    table: int
    again: Callable[[], Any]  # the same call on the last cold run's compiler: a warm call


def measure_cold(count: int, listener: Any, raw: list[bytes], quick: bool) -> Cold:
    users = users_of(count)
    passwords = list(users.values())
    store = MemoryStore(users)
    runs = runs_for(count, quick)
    colds, hashes = [], []
    result: Any = None
    again: Callable[[], Any] | None = None
    for _ in range(runs):
        again = None  # only the last run's compiler outlives its run (a smaller heap to walk)
        gc.collect()
        compiler = ListenerCompiler(CredentialResolver(ResolverSettings(), {"vault": store}))

        def call(compiler: ListenerCompiler = compiler) -> Any:
            return compiler.compile(listener, compiler.resolve(compiler.parse(raw)), None)

        seconds, result = timed(call)
        colds.append(seconds)
        again = call
        hashes.append(timed(lambda: hash_alone(passwords))[0])
    assert result is not None and result.users == count, (count, result and result.errors)
    assert again is not None
    assert store.fetches == runs, f"{store.fetches} fetches for {runs} cold runs"
    return Cold(
        count,
        runs,
        median(colds),
        median(hashes),
        result.listener.ByteSize(),
        sum(len(name) + 35 for name in users),  # "name:{SHA}<28 characters>\n"
        again,
    )


def measure_warm(colds: list[Cold], rounds: int) -> dict[int, float]:
    """Median warm call per size, the sizes taking turns so that the machine's slow and
    fast moments fall on all of them alike (a shared VM drifts by 2x within seconds)."""
    gc.collect()  # steady state: the cold calls' objects settled before the first round
    samples: dict[int, list[float]] = {cold.count: [] for cold in colds}
    for _ in range(rounds):
        for cold in colds:
            for _ in range(WARM_CALLS_PER_TURN):
                samples[cold.count].append(timed(cold.again)[0])  # nothing changed
    return {count: median(values) for count, values in samples.items()}


def run(context: Context) -> Section:
    section = Section(TITLE)
    listener = http_listener()
    raw = [store_policy("bench-users", NAMESPACE, "eg", "usersFrom", {"vault": {"path": PATH}})]
    colds = [measure_cold(count, listener, raw, context.quick) for count in SIZES]
    warm = measure_warm(colds, 5 if context.quick else WARM_ROUNDS)
    measured = [
        Measured(c.count, c.runs, c.seconds, warm[c.count], c.hashing, c.output, c.table)
        for c in colds
    ]
    for label, pick in (
        ("cold", lambda m: m.cold),
        ("warm", lambda m: m.warm),
        ("hashlib alone", lambda m: m.hashing),
    ):
        context.samples.scaling[label] = [(m.count, pick(m)) for m in measured]
    by_count = {m.count: m for m in measured}
    context.decisions.append(
        (
            "... and after a policy or one of its secrets changed (nothing cached)",
            f"{ms(by_count[10].cold)} more per listener with 10 users, "
            f"{ms(by_count[10_000].cold)} with 10,000 (compiling, in process), once: the "
            "translations after it are answered from memory",
            "section 2, cold",
        )
    )
    first = measured[0]
    previous: Measured | None = None
    for m in measured:
        section.rows += rows_for(m, previous, first)
        previous = m
    span = math.log(SIZES[-1] / SIZES[1])
    slope = math.log(measured[-1].cold / measured[1].cold) / span
    hash_slope = math.log(measured[-1].hashing / measured[1].hashing) / span
    section.notes.append(
        f"One `usersFrom` policy on `{PATH}`, served from memory by a store object that returns "
        '`StoredSecret(users, "1")`; listener: `tests.support.builders.http_listener()` (one '
        "default chain). Cold: a fresh CredentialResolver for each run, so nothing is cached; "
        "warm: the same call again on the last cold run's ListenerCompiler, the sizes taking turns "
        f"({WARM_ROUNDS} turns of {WARM_CALLS_PER_TURN} calls each, after a garbage "
        "collection; median). Linear growth is judged on the cold time per user as a "
        "multiple of hashlib's time per user in the same run, since at 100,000 users even "
        "hashlib alone pays for memory that no longer fits the caches. Log-log slope of cold "
        f"time from 1,000 to 100,000 users: {slope:.2f} (hashlib alone: {hash_slope:.2f}; "
        "1.00 is linear)."
    )
    return section


def rows_for(m: Measured, previous: Measured | None, first: Measured) -> list[Row]:
    per_user, hash_per_user = m.cold / m.count, m.hashing / m.count
    linear_target, linear = "-", None
    if previous is not None:
        linear_target = f"<= {LINEAR_SLACK:.2f}x the ratio at {previous.count:,}"
        linear = m.cold / m.hashing <= LINEAR_SLACK * previous.cold / previous.hashing
    spread = m.warm / first.warm
    return [
        Row(
            TITLE,
            f"{m.count:,} users, cold (median of {m.runs})",
            ms(m.cold),
            ms(m.hashing),
            ratio(m.cold, m.hashing),
            "< 50 ms" if m.count == 10_000 else "-",
            m.cold < COLD_10K_TARGET if m.count == 10_000 else None,
            "baseline of cold: hashlib.sha1 + base64 of the passwords alone",
        ),
        Row(
            TITLE,
            f"{m.count:,} users, cold per user",
            us(per_user),
            us(hash_per_user),
            ratio(per_user, hash_per_user),
            linear_target,
            linear,
        ),
        Row(
            TITLE,
            f"{m.count:,} users, warm (nothing changed)",
            ms(m.warm),
            ms(first.warm),
            f"{spread:.2f}x",
            "<= 1.10x the 10-user warm call",
            spread <= 1 + WARM_SPREAD,
            "baseline of warm: the 10-user warm call",
        ),
        Row(
            TITLE,
            f"{m.count:,} users, output (listener ByteSize)",
            size(m.output),
            size(m.table),
            ratio(m.output, m.table),
            note="baseline of output: the bare htpasswd text",
        ),
    ]
