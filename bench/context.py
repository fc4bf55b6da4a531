"""What the sections of one run share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.fixtures import CorpusListeners
from bench.results import Samples


@dataclass
class Context:
    workdir: Path  # server logs, the Vault token file
    corpus: CorpusListeners | None
    corpus_problem: str | None  # why `corpus` is None
    quick: bool = False  # a smoke run: fewer calls, shorter phases (figures not comparable)
    samples: Samples = field(default_factory=Samples)
    commands: dict[str, list[str]] = field(default_factory=dict)  # label -> server command
    idle_rss: dict[str, int] = field(default_factory=dict)  # label -> VmRSS bytes
    # What a user decides on, first on the page: (question, answer, where it is measured)
    decisions: list[tuple[str, str, str]] = field(default_factory=list)

    def scale(self, full: int, quick: int) -> int:
        return quick if self.quick else full
