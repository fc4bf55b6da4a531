"""The soak under faults: `python -m reliability.soak [--minutes 10] [--quick]` (`make soak`).

Runs the real server as its own process against the Vault stand-in and moto (behind the
fault proxy), with 8 callers checking every answer, through a schedule of store faults
(reliability/phases.py). Prints a table, rewrites the soak part of docs/reliability.md,
and exits 1 if a call failed, an answer was wrong, memory grew more than 10 % or a secret
reached the server's log. Why a soak: the cache's stale and fail-closed paths only run
when stores fail, and only a long run shows whether memory settles.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.fixtures import DEFAULT_CORPUS, CorpusMissing, load_corpus
from bench.processes import BenchServer
from reliability import document
from reliability.callers import Load, Tally
from reliability.expect import Settings, Timeline
from reliability.faults import FaultProxy
from reliability.phases import SCHEDULE, Stands, durations
from reliability.report import PhaseResult, Run, mib, table, verdict_lines
from reliability.scenario import OTHER_NS, Scenario, build, requests
from server.demo.gateway import serve_command
from tests.support.aws import DUMMY_KEY, REGION, MotoServer
from tests.support.builders import http_listener, https_listener
from tests.support.secrets import leaks, remember
from tests.support.vault import VaultStandIn

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
FULL = Settings(ttl=3.0, max_stale=12.0, timeout=1.0, margin=1.0)
QUICK = Settings(ttl=1.0, max_stale=1.0, timeout=0.5, margin=0.5)
WARM_UP = {False: 15.0, True: 4.0}  # seconds of calls before the first phase, by --quick
CALLERS = 8


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reliability.soak", description=__doc__)
    parser.add_argument(
        "--minutes", type=float, help="length of the phases (default 10; 1 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="short TTLs and about a minute")
    parser.add_argument(
        "--rounds", type=int, default=1, help="run the schedule this many times in the minutes"
    )
    parser.add_argument("--doc", type=Path, default=DOC, help="the page to write")
    args = parser.parse_args(argv)
    minutes = args.minutes if args.minutes is not None else (1.0 if args.quick else 10.0)
    settings = QUICK if args.quick else FULL
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's access log
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    listeners, corpus, scope = _listeners()
    scenario = build(*scope)
    command = ".venv/bin/python -m reliability.soak" + " ".join(["", *(argv or sys.argv[1:])])
    run = Run(minutes, args.quick, settings, command.strip(), _shown(settings), corpus)
    _environment()
    print(f"soak: {minutes:g} min of phases; server log in {workdir}", flush=True)
    with (
        VaultStandIn() as vault,
        MotoServer() as moto,
        FaultProxy(moto.port) as proxy,
    ):
        stands = Stands(vault, moto, proxy, scenario, settings, moto.secrets_client())
        token_file = _seed(stands, workdir)
        server = BenchServer(
            "ours",
            lambda port: serve_command(
                port, *_server_args(settings, vault.url, str(token_file), proxy.url)
            ),
            workdir / "server.log",
        )
        with server:
            load = Load(
                server.address,
                requests(scenario, listeners),
                Timeline(settings),
                scope,
                len(SCHEDULE) * args.rounds + 1,
                CALLERS,
            )
            try:
                _soak(run, stands, server, load, minutes * 60, args.rounds)
            finally:
                load.stop()
    run.leaks = leaks([("server log", (workdir / "server.log").read_text(errors="replace"))])
    output = "\n".join(["", table(run), "", *verdict_lines(run)])
    run.leaks += leaks([("soak output", output)])
    text = document.page(run, scenario, args.doc)
    run.leaks += leaks([(str(args.doc), text)])
    if run.leaks:  # say where, never what; and write nothing that holds a secret
        print("\n".join(run.leaks))
        return 1
    args.doc.write_text(text)
    print(output)
    print(f"\n{'PASS' if run.passed else 'FAIL'}; written to {args.doc}")
    return 0 if run.passed else 1


def _soak(
    run: Run, stands: Stands, server: BenchServer, load: Load, total: float, rounds: int
) -> None:
    """Warm-up, then every phase in turn (`rounds` times), noting the server's memory after each.

    More than one round tells a leak (growing every round) from a working set that a
    fault's code paths build once (growing in the first round only).
    """
    timeline = load.timeline
    for store in ("vault", "aws"):
        timeline.begin(store, lenient=True)  # nothing cached yet: only intruders count
    warm = WARM_UP[run.quick]
    vault_before, aws_before = stands.vault.count(), stands.proxy.requests
    load.phase_started = time.monotonic()
    load.start()
    time.sleep(warm)
    for store in ("vault", "aws"):
        timeline.end(store)
    run.rss_start = server.rss_bytes()
    run.phases.append(
        _result(
            "warm-up", warm, "none (cold cache)", "store users absent until first fetched",
            load.tallies[0], stands, vault_before, aws_before, run.rss_start,
        )
    )  # fmt: skip
    schedule = [
        (f"r{n} {phase.name}" if rounds > 1 else phase.name, phase, seconds)
        for n in range(1, rounds + 1)
        for phase, seconds in zip(SCHEDULE, durations(total / rounds), strict=True)
    ]
    _progress(run, 0, len(schedule))
    for index, (name, phase, seconds) in enumerate(schedule, 1):
        vault_before, aws_before = stands.vault.count(), stands.proxy.requests
        started = time.monotonic()
        phase.start(stands)
        keys = ([phase.outage] if phase.outage else []) + list(phase.revokes(stands))
        for key in keys:
            timeline.begin(key, definite=key not in ("vault", "aws"))
        load.phase_started, load.phase = started, index
        time.sleep(max(0.0, started + seconds - time.monotonic()))
        phase.end(stands)
        for key in keys:
            timeline.end(key)
        run.phases.append(
            _result(
                name, seconds, phase.fault, phase.allows, load.tallies[index], stands,
                vault_before, aws_before, server.rss_bytes(),
            )
        )  # fmt: skip
        _progress(run, index, len(schedule))
    run.rss_end = run.phases[-1].rss_end
    run.samples = list(load.samples)


def _result(
    name: str,
    seconds: float,
    fault: str,
    allows: str,
    tally: Tally,
    stands: Stands,
    vault_before: int,
    aws_before: int,
    rss: int,
) -> PhaseResult:
    vault_requests = stands.vault.count() - vault_before
    aws_requests = stands.proxy.requests - aws_before
    return PhaseResult(name, seconds, fault, allows, tally, vault_requests, aws_requests, rss)


def _progress(run: Run, index: int, total: int) -> None:
    phase = run.phases[-1]
    t = phase.tally
    print(
        f"[{index:2d}/{total}] {phase.name:<22} {phase.seconds:5.0f} s  "
        f"{t.calls:>9,} calls  {t.failed} failed  {t.wrong} wrong  RSS {mib(phase.rss_end)}",
        flush=True,
    )


def _listeners() -> tuple[dict[str, Any], str, tuple[str, str]]:
    """The corpus's HTTPS and HTTP/3 listeners, or built ones; plus a plain-HTTP one."""
    try:
        corpus = load_corpus(DEFAULT_CORPUS)
    except CorpusMissing as missing:
        ns, gateway = "envoy-gateway", "gateway-1"
        https = https_listener(
            "https-wildcard", "https-foo", "https-bar", gateway=f"{ns}/{gateway}"
        )
        http = http_listener(name=f"{ns}/{gateway}/http")
        described = (
            f"built by tests/support/builders.py ({missing}): HTTPS with 3 chains (twice), "
            "plain HTTP"
        )
        return {"https": https, "http3": https, "http": http}, described, (ns, gateway)
    ns, gateway = corpus.namespace, corpus.gateway
    http = http_listener(name=f"{ns}/{gateway}/http")
    described = (
        f"`{corpus.https_id}` (HTTPS, 3 filter chains) and `{corpus.http3_id}` (HTTP/3) from "
        f"{DEFAULT_CORPUS.relative_to(ROOT.parent)}, and `tests.support.builders.http_listener()` "
        "(plain HTTP, one default chain, where every policy applies)"
    )
    return {"https": corpus.https, "http3": corpus.http3, "http": http}, described, (ns, gateway)


def _environment() -> None:
    """Dummy AWS credentials for the server's boto3 (moto accepts any signature)."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        os.environ.pop(name, None)
    os.environ.update(
        AWS_ACCESS_KEY_ID=DUMMY_KEY,
        AWS_SECRET_ACCESS_KEY=DUMMY_KEY,
        AWS_EC2_METADATA_DISABLED="true",
    )


def _seed(stands: Stands, workdir: Path) -> Path:
    """The secrets in both stores, and a Vault token that reads only its two prefixes."""
    scenario: Scenario = stands.scenario
    token = "hvs." + secrets.token_urlsafe(24)
    remember(token)
    stands.vault.add_token(
        token,
        policies=[
            f"secret/data/gateways/{scenario.namespace}/soak/",
            f"secret/data/gateways/{OTHER_NS}/",  # readable: only the tenancy guard stops it
        ],
    )
    for path, data in scenario.vault.items():
        stands.vault.put_v2(path, data)
    for name, value in scenario.aws.items():
        stands.setup.create_secret(Name=name, SecretString=value)
    token_file = workdir / "vault-token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    return token_file


def _server_args(settings: Settings, vault: str, token_file: str, aws: str) -> list[str]:
    return [
        "--log-level", "error",
        "--vault-addr", vault, "--vault-token-file", token_file,
        "--aws-region", REGION, "--aws-endpoint-url", aws,
        "--secret-cache-ttl", f"{settings.ttl:g}s",
        "--secret-max-stale", f"{settings.max_stale:g}s",
        "--backend-timeout", f"{settings.timeout:g}s",
        "--rotation-poll-interval", "0",
    ]  # fmt: skip


def _shown(settings: Settings) -> str:
    """The server's command line as the report shows it: placeholders for ports and paths."""
    args = _server_args(
        settings,
        "http://127.0.0.1:<vault>",
        "<workdir>/vault-token",
        "http://127.0.0.1:<aws-proxy>",
    )
    line = shlex.join([".venv/bin/python", *serve_command(0, *args)[1:]])
    return line.replace("--port 0", "--port <port>").replace("'", "")


if __name__ == "__main__":
    sys.exit(main())
