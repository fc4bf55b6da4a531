"""Sections 3 and 4: fan-in on one cold Vault secret, and the server's resident memory.

A VaultStandIn (tests/support/vault.py, the real HTTP API as far as hvac uses it) runs in
the bench process; our server runs as its own process with `--vault-addr` and a token file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench.context import Context
from bench.fixtures import (
    Caller,
    Concurrent,
    CorpusListeners,
    concurrent,
    hook_request,
    plaintext_policies,
    store_policy,
)
from bench.processes import BenchServer
from bench.results import Row, Section, mib, ms, ratio, size
from tests.support.vault import VaultStandIn

FANIN_TITLE = "3. Fan-in on one cold secret (Vault)"
MEMORY_TITLE = "4. Resident memory (VmRSS)"
TOKEN = "hvs.bench-server-token"  # noqa: S105 (a stand-in's token, made up here)
FANIN_CALLS = 500
CALLERS = 8
VAULT_LATENCY = 0.05  # seconds the stand-in waits before each answer, as a remote Vault would
BIG = 100_000
IDLE_TARGET = 80_000_000  # bytes: 80 MB (76.3 MiB)


@dataclass(frozen=True)
class Figures:
    secret: str
    users_secret: str
    idle: int  # VmRSS, Vault configured, after start + 6 calls
    cold: Concurrent  # the 500 calls on the cold secret
    warm: Concurrent  # the same 500 calls again, secret cached
    after_cold: int  # backend requests for the secret
    after_warm: int
    protected: bool  # the answers carry our filter
    big_seconds: float
    big_response: int  # bytes
    after_big: int  # VmRSS
    settled: int  # VmRSS 1 s later


def run(context: Context) -> tuple[Section, Section]:
    fanin, memory = Section(FANIN_TITLE), Section(MEMORY_TITLE)
    if context.corpus is None:
        fanin.skipped = memory.skipped = f"skipped: {context.corpus_problem}"
        return fanin, memory
    figures = measure(context, context.corpus)
    fanin.rows += fanin_rows(figures)
    fanin.notes.append(
        f"One `passwordFrom` policy on `secret/data/{figures.secret}` attached to every call "
        f"(the two corpus listeners, alternating); the Vault stand-in waits "
        f"{VAULT_LATENCY * 1000:.0f} ms before each answer, as a remote Vault would, so the "
        f"{CALLERS} callers' first calls overlap the fetch; cache TTL 60 s (the default). "
        f"Answers carry our filter: {'yes' if figures.protected else 'NO'}."
    )
    memory.rows += memory_rows(figures, context.idle_rss)
    memory.notes.append(
        f"The {BIG:,}-user call (a `usersFrom` policy on `secret/data/{figures.users_secret}`, "
        f"the HTTPS listener with 3 chains) took {ms(figures.big_seconds)} end to end and its "
        f"answer is {size(figures.big_response)}, over gRPC's default 4 MiB message limit: the "
        "bench's channels raise the client's max receive size to 256 MiB and the server runs "
        "with `--max-message-size 64MiB` (as Envoy Gateway's maxMessageSize would have to be "
        "raised). It also runs with `--backend-timeout 10s` and `--call-timeout 60s` so that "
        "reading the 100k-user secret from the stand-in cannot time out."
    )
    return fanin, memory


def measure(context: Context, corpus: CorpusListeners) -> Figures:
    ns, gateway = corpus.namespace, corpus.gateway
    secret, users_secret = f"gateways/{ns}/bench-fanin", f"gateways/{ns}/bench-100k"
    token_file = context.workdir / "vault-token"
    token_file.write_text(TOKEN)
    shared = store_policy(
        "bench-fanin", ns, gateway, "passwordFrom",
        {"vault": {"path": f"secret/data/{secret}", "key": "password"}},
    )  # fmt: skip
    many = store_policy(
        "bench-100k", ns, gateway, "usersFrom", {"vault": {"path": f"secret/data/{users_secret}"}}
    )
    requests = [hook_request(corpus.https, [shared]), hook_request(corpus.http3, [shared])]
    with VaultStandIn() as vault:
        vault.add_token(TOKEN, policies=["secret/data/gateways/"])
        vault.put_v2(secret, {"password": "fan-in-password"})
        vault.put_v2(users_secret, {f"user-{i:06d}": f"password-{i:06d}" for i in range(BIG)})
        server = BenchServer.ours(
            context.workdir / "stores-ours.log",
            "--vault-addr", vault.url, "--vault-token-file", str(token_file),
            "--backend-timeout", "10s", "--max-message-size", "64MiB", "--call-timeout", "60s",
        )  # fmt: skip
        context.commands["ours with Vault (sections 3, 4)"] = server.command
        with server:
            caller = Caller(server.address)
            plain = plaintext_policies(ns, gateway)
            for listener in (corpus.https, corpus.http3) * 3:
                caller.call(hook_request(listener, plain))
            idle = server.rss_bytes()

            # 3. every call names the same secret, which nobody has read yet
            vault.reset_counts()
            vault.delay = VAULT_LATENCY
            cold = concurrent(server.address, requests, CALLERS, calls=FANIN_CALLS)
            after_cold = vault.count(f"secret/data/{secret}")
            warm = concurrent(server.address, requests, CALLERS, calls=FANIN_CALLS)
            after_warm = vault.count(f"secret/data/{secret}")
            vault.delay = 0.0
            protected = caller.call(requests[0]).listener.ByteSize() > corpus.https.ByteSize()

            # 4. memory after compiling 100 000 users through the hook
            started = time.perf_counter()
            answer = caller.call(hook_request(corpus.https, [many]), timeout=120)
            big_seconds = time.perf_counter() - started
            after_big = server.rss_bytes()
            time.sleep(1.0)
            settled = server.rss_bytes()
            caller.close()
    return Figures(
        secret,
        users_secret,
        idle,
        cold,
        warm,
        after_cold,
        after_warm,
        protected,
        big_seconds,
        answer.ByteSize(),
        after_big,
        settled,
    )


def fanin_rows(f: Figures) -> list[Row]:
    return [
        Row(
            FANIN_TITLE,
            f"backend requests, {FANIN_CALLS} calls from {CALLERS} callers",
            str(f.after_cold),
            str(FANIN_CALLS),
            ratio(f.after_cold, FANIN_CALLS),
            "exactly 1 (one secret, one TTL)",
            f.after_cold == 1,
            "baseline of requests: one per call (no cache, no single flight)",
        ),
        Row(
            FANIN_TITLE,
            f"backend requests after {FANIN_CALLS} more (same TTL)",
            str(f.after_warm),
            "1",
            "-",
            "exactly 1",
            f.after_warm == 1,
        ),
        Row(
            FANIN_TITLE,
            f"total time, {FANIN_CALLS} calls, cold secret",
            ms(f.cold.seconds),
            ms(f.warm.seconds),
            ratio(f.cold.seconds, f.warm.seconds),
            note="baseline of time: the same calls again with the secret cached",
        ),
    ]


def memory_rows(f: Figures, idle_rss: dict[str, int]) -> list[Row]:
    base = idle_rss.get("baseline")
    rows = []
    for label, value in (("idle, no store", idle_rss.get("ours")), ("idle, Vault", f.idle)):
        if value is None:
            continue
        rows.append(
            Row(
                MEMORY_TITLE,
                f"{label} (after start + 6 calls)",
                mib(value),
                mib(base) if base else "-",
                ratio(value, base) if base else "-",
                "< 80 MB (76.3 MiB)",
                value < IDLE_TARGET,
                "baseline of idle: the pass-through server after start + 6 calls",
            )
        )
    return [
        *rows,
        Row(
            MEMORY_TITLE,
            f"after compiling {BIG:,} users through the hook",
            mib(f.after_big),
            mib(f.idle),
            ratio(f.after_big, f.idle),
            note="baseline of 100k: the same process idle",
        ),
        Row(
            MEMORY_TITLE,
            "... 1 s later (that secret still cached)",
            mib(f.settled),
            mib(f.idle),
            ratio(f.settled, f.idle),
        ),
    ]
