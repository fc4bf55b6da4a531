"""Section 1: PostHTTPListenerModify over real gRPC on loopback, ours against a pass-through."""

from __future__ import annotations

from typing import Any

from bench.context import Context
from bench.fixtures import (
    Caller,
    Concurrent,
    concurrent,
    hook_request,
    plaintext_policies,
    sequential,
)
from bench.processes import BenchServer
from bench.results import Row, Section, ms, percentile, ratio

TITLE = "1. Hook latency and throughput (gRPC, loopback, warm)"
P99_TARGET = 1.2  # x the baseline's p99, one caller
THROUGHPUT_TARGET = 0.95  # x the baseline's calls per second, 8 callers


def merged(phases: list[Concurrent]) -> Concurrent:
    """Several timed phases as one: all their calls over all their time."""
    return Concurrent(
        sum(phase.calls for phase in phases),
        sum(phase.seconds for phase in phases),
        [latency for phase in phases for latency in phase.latencies],
    )


def run(context: Context) -> Section:
    section = Section(TITLE)
    if context.corpus is None:
        section.skipped = f"skipped: {context.corpus_problem}"
        return section
    corpus = context.corpus
    policies = plaintext_policies(corpus.namespace, corpus.gateway)
    requests = [hook_request(corpus.https, policies), hook_request(corpus.http3, policies)]
    warmup = context.scale(300, 50)
    calls = context.scale(2000, 200)
    seconds = 1.0 if context.quick else 6.0

    # Both servers run at once and are measured in alternating rounds, so that a change in
    # the machine's speed during the run (a shared VM) weighs on both alike.
    rounds = 2 if context.quick else 6
    servers = [
        BenchServer.ours(context.workdir / "hook-ours.log"),
        BenchServer.baseline(context.workdir / "hook-baseline.log"),
    ]
    figures: dict[str, dict[str, Any]] = {
        server.label: {"latencies": [], "one": [], "eight": []} for server in servers
    }
    with servers[0], servers[1]:
        callers = {}
        for server in servers:
            context.commands[f"{server.label} (sections 1, 4)"] = server.command
            caller = callers[server.label] = Caller(server.address)
            sequential(caller, requests, 6)
            context.idle_rss[server.label] = server.rss_bytes()  # after start + a few calls
            sequential(caller, requests, warmup)
        for _ in range(rounds):
            for server in servers:
                figure = figures[server.label]
                figure["latencies"] += sequential(callers[server.label], requests, calls // rounds)
                figure["one"].append(
                    concurrent(server.address, requests, 1, seconds=seconds / rounds)
                )
                figure["eight"].append(
                    concurrent(server.address, requests, 8, seconds=seconds / rounds)
                )
        for caller in callers.values():
            caller.close()
    for label, figure in figures.items():
        figure["one"] = merged(figure["one"])
        figure["eight"] = merged(figure["eight"])
        context.samples.one_caller[label] = figure["latencies"]
        context.samples.eight_callers[label] = figure["eight"].latencies

    ours, base = figures["ours"], figures["baseline"]
    context.decisions.append(
        (
            "Time each listener adds to a translation (Envoy Gateway calls the hook once per "
            "listener, one call after another)",
            f"{ms(percentile(ours['latencies'], 0.50))} (median), "
            f"{ms(percentile(ours['latencies'], 0.99))} (99th percentile), gRPC round trip "
            "included, for a listener seen before with 10 policies: a Gateway with 20 "
            "listeners waits 20 times that",
            "section 1, one caller",
        )
    )
    for name, fraction in (("p50", 0.50), ("p99", 0.99)):
        mine = percentile(ours["latencies"], fraction)
        theirs = percentile(base["latencies"], fraction)
        target = fraction == 0.99
        section.rows.append(
            Row(
                TITLE,
                f"{name} latency, 1 caller ({calls} calls)",
                ms(mine),
                ms(theirs),
                ratio(mine, theirs),
                f"<= {P99_TARGET:g}x baseline" if target else "-",
                mine <= P99_TARGET * theirs if target else None,
            )
        )
    for label, count in (("one", 1), ("eight", 8)):
        mine, theirs = ours[label].per_second, base[label].per_second
        target = count == 8
        section.rows.append(
            Row(
                TITLE,
                f"calls/s, {count} caller{'s' if count > 1 else ''} ({seconds:g} s)",
                f"{mine:,.0f}",
                f"{theirs:,.0f}",
                ratio(mine, theirs),
                f">= {THROUGHPUT_TARGET:g}x baseline" if target else "-",
                mine >= THROUGHPUT_TARGET * theirs if target else None,
            )
        )
    p99_eight = percentile(ours["eight"].latencies, 0.99)
    section.rows.append(
        Row(
            TITLE,
            "p99 latency, 8 callers",
            ms(p99_eight),
            ms(percentile(base["eight"].latencies, 0.99)),
            ratio(p99_eight, percentile(base["eight"].latencies, 0.99)),
        )
    )
    section.notes.append(
        f"Request: `{corpus.https_id}` (HTTPS, 3 filter chains, "
        f"{corpus.https.ByteSize():,} B) alternating with `{corpus.http3_id}` (HTTP/3, "
        f"udp_listener_config, {corpus.http3.ByteSize():,} B), each with 10 plaintext "
        f"policies (distinct users) on Gateway `{corpus.namespace}/{corpus.gateway}`; "
        f"{warmup} warm-up calls first, so ours answers from its memo of answers "
        "(`server/answers.py`: the request's bytes, then its policies resolved to the same "
        "credentials), as it does for Envoy Gateway's repeated translations. Callers are "
        "threads of the bench process, each with its own channel; the client shares the 2 "
        "cores with the server, for ours and the baseline alike."
    )
    return section
