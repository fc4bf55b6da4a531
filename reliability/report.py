"""The soak's figures: a table on stdout and in docs/reliability.md, and the verdict.

Only counts, times and sizes are reported, never a password, hash or token. The part of
docs/reliability.md from the fuzzing marker on belongs to someone else and is kept.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

from bench.report import cpu_model
from reliability.callers import Tally
from reliability.expect import Settings

GROWTH_LIMIT = 0.10  # resident memory may grow at most 10 % from warm to the end
MARKER = "<!-- hostile input and fuzzing: see below -->"
FUZZ_PLACEHOLDER = f"{MARKER}\n\n## Hostile input and fuzzing\n\n(written separately)\n"


@dataclass(frozen=True)
class PhaseResult:
    name: str
    seconds: float
    fault: str
    allows: str
    tally: Tally
    vault_requests: int  # requests that reached the Vault stand-in during the phase
    aws_requests: int  # ... and the AWS endpoint (the fault proxy)
    rss_end: int  # VmRSS of the server at the end of the phase, bytes


@dataclass
class Run:
    minutes: float
    quick: bool
    settings: Settings
    command: str  # the soak's own command line
    server_command: str  # with placeholders for ports and temporary paths
    corpus: str  # where the listeners came from
    rss_start: int = 0
    rss_end: int = 0
    phases: list[PhaseResult] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)  # secrets found in the server's log

    @property
    def calls(self) -> int:
        return sum(p.tally.calls for p in self.phases)

    @property
    def failed(self) -> int:
        return sum(p.tally.failed for p in self.phases)

    @property
    def wrong(self) -> int:
        return sum(p.tally.wrong for p in self.phases)

    @property
    def growth(self) -> float:
        return self.rss_end / self.rss_start - 1 if self.rss_start else 0.0

    def targets(self) -> list[tuple[str, str, bool]]:
        return [
            ("calls failed (any gRPC error)", f"{self.failed:,} = 0", self.failed == 0),
            ("wrong answers", f"{self.wrong:,} = 0", self.wrong == 0),
            (
                "resident memory growth, warm to end",
                f"{self.growth:+.1%} <= {GROWTH_LIMIT:.0%}",
                self.growth <= GROWTH_LIMIT,
            ),
            ("secrets in the server's log", f"{len(self.leaks)} = 0", not self.leaks),
        ]

    @property
    def passed(self) -> bool:
        return all(ok for _, _, ok in self.targets())


def mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, int(share * len(values)))] if values else float("nan")


def table(run: Run) -> str:
    head = (
        "| phase | s | calls | failed | wrong | store policies admitted | Vault req. | "
        "AWS req. | p50 | p99 | RSS at end |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for phase in run.phases:
        t = phase.tally
        latencies = sorted(t.latencies)
        looked = t.admitted + t.denied
        admitted = f"{t.admitted / looked:.0%}" if looked else "-"
        rows.append(
            f"| {phase.name} | {phase.seconds:.0f} | {t.calls:,} | {t.failed:,} | {t.wrong:,} | "
            f"{admitted} | {phase.vault_requests:,} | {phase.aws_requests:,} | "
            f"{_percentile(latencies, 0.50) * 1000:.2f} ms | "
            f"{_percentile(latencies, 0.99) * 1000:.1f} ms | {mib(phase.rss_end)} |"
        )
    everything = sorted(x for p in run.phases for x in p.tally.latencies)
    seconds = sum(p.seconds for p in run.phases)
    rows.append(
        f"| **all** | {seconds:.0f} | {run.calls:,} | {run.failed:,} | {run.wrong:,} | - | "
        f"{sum(p.vault_requests for p in run.phases):,} | "
        f"{sum(p.aws_requests for p in run.phases):,} | "
        f"{_percentile(everything, 0.50) * 1000:.2f} ms | "
        f"{_percentile(everything, 0.99) * 1000:.1f} ms | {mib(run.rss_end)} |"
    )
    return "\n".join(rows)


def verdict_lines(run: Run) -> list[str]:
    lines = [
        f"Resident memory (VmRSS) of the server: {mib(run.rss_start)} after warm-up, "
        f"{mib(run.rss_end)} at the end ({run.growth:+.1%}).",
        "",
        "| target | measured | result |",
        "|---|---|---|",
    ]
    for name, measured, ok in run.targets():
        lines.append(f"| {name} | {measured} | {'PASS' if ok else '**FAIL**'} |")
    if run.samples:
        lines += ["", "First failed calls and wrong answers (phase, seconds into it, request):"]
        lines += [f"- {sample}" for sample in run.samples]
    reasons = {r for p in run.phases for r in p.tally.reasons}
    if reasons:
        lines += ["", "Wrong answers by reason:"]
        for reason in sorted(reasons):
            count = sum(p.tally.reasons[reason] for p in run.phases)
            lines.append(f"- {count:,} x {reason}")
    if run.leaks:
        lines += ["", "Secrets found in the server's log:"] + [f"- {leak}" for leak in run.leaks]
    return lines


def machine() -> str:
    model = cpu_model("unknown CPU")
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / 2**20:.1f} GiB RAM"
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs ({model}){memory}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()} ({platform.python_implementation()})"
    )
