"""The table on the terminal, docs/performance.md and the plot next to it."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from bench.context import Context
from bench.fixtures import ROOT
from bench.hook import P99_TARGET
from bench.results import Row, Section, percentile

MARKER = "<!-- Everything below is written by `python -m bench` (make bench); edit above it. -->"
DEFAULT_INTRO = """# Performance

Two figures decide how this server fits a cluster, and the page opens with them: the time
each listener adds to a translation (Envoy Gateway calls the hook for every listener of
every translation and waits for each answer), and how many users fit in one answer of
Envoy Gateway's default message size. The tables after them hold every measurement, each
beside a baseline measured in the same run on the same machine, so that the ratios, not
the absolute times, carry the claims. A target is set before the run and never lowered
to pass: a FAIL is a finding.

`make bench` (`python -m bench`) rewrites everything below the marker, and the plot of
the latency distributions (`performance.png`).
"""
COLUMNS = ("measure", "ours", "baseline", "ours/baseline", "target", "result")
# The plot's labels, and what each baseline is.
SCALING_NAMES = {
    "cold": "ours, cold (nothing cached)",
    "warm": "ours, warm (nothing changed)",
    "hashlib alone": "baseline: hashlib alone",
}
BASELINES = (
    "Baselines, measured in the same run: the pass-through server is the same generated gRPC "
    "service answering each listener unchanged (no policies parsed, nothing compiled);\n"
    "hashlib alone is SHA-1 + base64 of the same passwords with nothing around it. "
    "Targets are drawn only where they apply."
)


def cpu_model(unknown: str = "unknown") -> str:
    """The CPU's model name from /proc/cpuinfo (shared by the bench and the soak pages)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return unknown


def machine() -> dict[str, str]:
    model = cpu_model()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "CPU": model,
        "cores": f"{os.cpu_count()} ({usable} usable by this process)",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "grpcio": _version("grpcio"),
        "protobuf": _version("protobuf"),
        "xds-protos": _version("xds-protos"),
        "envoy-data-plane": _version("envoy-data-plane"),
        "commit": _commit(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _commit() -> str:
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


def _cells(row: Row) -> tuple[str, ...]:
    return (row.measure, row.ours, row.baseline, row.ratio, row.target, row.verdict)


def text_table(sections: Sequence[Section]) -> str:
    """The table for the terminal: fixed-width columns, one block per section."""
    rows = [COLUMNS] + [_cells(row) for section in sections for row in section.rows]
    widths = [max(len(row[index]) for row in rows) for index in range(len(COLUMNS))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    out = [line(COLUMNS), "  ".join("-" * width for width in widths)]
    for section in sections:
        out.append(section.title)
        if section.skipped:
            out.append(f"  {section.skipped}")
        out += ["  " + line(_cells(row)).rstrip() for row in section.rows]
    return "\n".join(out)


def misses(sections: Sequence[Section]) -> list[Row]:
    return [row for section in sections for row in section.rows if row.passed is False]


def markdown(
    sections: Sequence[Section], context: Context, info: dict[str, str], seconds: float
) -> str:
    out = ["## What to plan for", "", "| question | answer | measured in |", "|---|---|---|"]
    out += [
        "| " + " | ".join(cell.replace("|", "\\|") for cell in decision) + " |"
        for decision in context.decisions
    ]
    out += ["", "## Results", ""]
    checked = [row for section in sections for row in section.rows if row.passed is not None]
    failed = misses(sections)
    out.append(
        f"{len(checked) - len(failed)} of {len(checked)} targets met"
        + (f"; missed: {', '.join(f'{row.measure}' for row in failed)}." if failed else ".")
    )
    if context.quick:
        out += ["", "**A `--quick` run: fewer calls and shorter phases; not for comparison.**"]
    for section in sections:
        out += ["", f"### {section.title}", ""]
        if section.skipped:
            out += [f"*{section.skipped}*"]
            continue
        out.append("| " + " | ".join(COLUMNS) + " |")
        out.append("|" + "---|" * len(COLUMNS))
        for row in section.rows:
            cells = list(_cells(row))
            if row.passed is not None:
                cells[-1] = f"**{row.verdict}**"
            out.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
        notes = sorted({row.note for row in section.rows if row.note})
        out += [""] + [f"- {note}" for note in section.notes + notes]
    out += ["", "![Latency distributions](performance.png)", ""]
    out += ["## The machine", "", "| | |", "|---|---|"]
    out += [f"| {key} | {value} |" for key, value in info.items()]
    out += [f"| run time | {seconds:.0f} s |", ""]
    out += ["## The commands", "", "```sh", "make bench            # = .venv/bin/python -m bench"]
    out.append("python -m bench " + " ".join(sys.argv[1:]) if sys.argv[1:] else "python -m bench")
    out += ["```", "", "The servers it started (ports are picked free each run):", "", "```sh"]
    for label, command in context.commands.items():
        shown = [Path(part).name if part == sys.executable else part for part in command]
        out.append(f"# {label}")
        out.append(shlex.join(shown))
    out += ["```", ""]
    return "\n".join(out)


def write_markdown(path: Path, body: str) -> None:
    intro = DEFAULT_INTRO
    if path.exists():
        text = path.read_text()
        if MARKER in text:
            intro = text.split(MARKER, 1)[0].rstrip() + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{intro}\n{MARKER}\n\n{body}")


def plot(context: Context, path: Path) -> bool:
    """The latency distributions as a PNG; False when matplotlib is not installed."""
    try:
        import matplotlib as mpl  # noqa: PLC0415

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    samples = context.samples
    figure, axes = plt.subplots(1, 3, figsize=(16, 6), layout="constrained")
    colors = {"ours": "tab:blue", "baseline": "tab:gray"}
    names = {"ours": "ours", "baseline": "baseline: pass-through server"}
    below = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.14), "fontsize": "small"}
    left, middle, right = axes
    for label, values in samples.one_caller.items():
        shown = [value * 1000 for value in values if value <= percentile(values, 0.995)]
        left.hist(shown, bins=80, alpha=0.6, label=names.get(label, label), color=colors.get(label))
        left.axvline(
            percentile(values, 0.99) * 1000,
            color=colors.get(label),
            linestyle="--",
            label=f"{names.get(label, label).split(':')[0]}: p99",
        )
    baseline = samples.one_caller.get("baseline")
    if baseline:
        limit = P99_TARGET * percentile(baseline, 0.99) * 1000
        left.axvline(
            limit, color="tab:red", linestyle=":", label=f"target: ours, p99 <= {P99_TARGET:g}x"
        )
    left.set(title="Hook latency, 1 caller", xlabel="ms per call", ylabel="calls")
    left.legend(**below)
    for label, values in samples.eight_callers.items():
        ordered = sorted(value * 1000 for value in values)
        fractions = [(index + 1) / len(ordered) for index in range(len(ordered))]
        middle.plot(ordered, fractions, label=names.get(label, label), color=colors.get(label))
    middle.set(title="Hook latency, 8 callers", xlabel="ms per call", ylabel="fraction of calls")
    middle.set_xscale("log")
    middle.grid(alpha=0.3)
    middle.legend(title="no target on latency here (calls/s: see the table)", **below)
    for label, points in samples.scaling.items():
        right.plot(
            [count for count, _ in points],
            [seconds * 1000 for _, seconds in points],
            marker="o",
            label=SCALING_NAMES.get(label, label),
        )
    right.plot(
        [10_000], [50], marker="_", markersize=24, markeredgewidth=2, color="tab:red",
        linestyle="none", label="target: 10,000 users cold < 50 ms",
    )  # fmt: skip
    right.set(title="Compile time by users (in process)", xlabel="users", ylabel="ms (median)")
    right.set_xscale("log")
    right.set_yscale("log")
    right.grid(alpha=0.3, which="both")
    right.legend(**below)
    figure.suptitle("extension server: hook latency and compile time, each beside a baseline")
    figure.supxlabel(BASELINES, fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
