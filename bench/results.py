"""What every section hands back: rows of the table, and the samples behind the plot."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Row:
    """One line of the table: our figure, the baseline's, and the target it is held to."""

    section: str
    measure: str
    ours: str
    baseline: str = "-"
    ratio: str = "-"
    target: str = "-"
    passed: bool | None = None  # None: no target on this line
    note: str = ""

    @property
    def verdict(self) -> str:
        return "-" if self.passed is None else ("PASS" if self.passed else "FAIL")


@dataclass
class Section:
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None  # why the section did not run


@dataclass
class Samples:
    """Latency samples in seconds, by label, for the plot."""

    one_caller: dict[str, list[float]] = field(default_factory=dict)
    eight_callers: dict[str, list[float]] = field(default_factory=dict)
    scaling: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (`fraction` in 0..1) of `values`."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if not ordered:
        return math.nan
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def ms(seconds: float) -> str:
    """Seconds as milliseconds, with precision to suit the size."""
    value = seconds * 1000
    if value >= 100:
        return f"{value:.0f} ms"
    if value >= 10:
        return f"{value:.1f} ms"
    if value >= 1:
        return f"{value:.2f} ms"
    return f"{value:.3f} ms"


def us(seconds: float) -> str:
    """Seconds as microseconds; milliseconds from 1 ms up."""
    return f"{seconds * 1e6:.1f} µs" if seconds < 1e-3 else ms(seconds)


def ratio(ours: float, baseline: float) -> str:
    if baseline == 0 or math.isnan(baseline) or math.isnan(ours):
        return "-"
    value = ours / baseline
    return f"{value:.2f}x" if 0.1 <= value < 100 else f"{value:.3g}x"


def mib(size: float) -> str:
    return f"{size / 2**20:.1f} MiB"


def size(num_bytes: int) -> str:
    if num_bytes >= 2**20:
        return f"{num_bytes / 2**20:.2f} MiB"
    if num_bytes >= 2**10:
        return f"{num_bytes / 2**10:.1f} KiB"
    return f"{num_bytes} B"
