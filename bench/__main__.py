"""`python -m bench`: run every section, print the table, write docs/performance.md and its PNG."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import capacity, hook, report, scaling, stores, wire
from bench.context import Context
from bench.fixtures import DEFAULT_CORPUS, ROOT, CorpusMissing, load_corpus
from bench.results import Section


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--corpus",
        type=Path,
        default=DEFAULT_CORPUS,
        help="directory of Envoy Gateway listener YAML (default: %(default)s)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=ROOT / "docs" / "performance.md",
        help="the page to write; the PNG goes next to it (default: %(default)s)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: fewer calls, shorter phases (figures not comparable)",
    )
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)  # fmt: skip

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        try:
            corpus, problem = load_corpus(args.corpus), None
        except CorpusMissing as error:
            corpus, problem = None, str(error)
            print(f"bench: {problem}: sections 1, 3, 4 and 5 are skipped", file=sys.stderr)
        context = Context(Path(workdir), corpus, problem, quick=args.quick)
        sections: list[Section] = []
        steps: list[tuple[str, Callable[[Context], Section | tuple[Section, ...]]]] = [
            ("hook latency and throughput", hook.run),
            ("compile scaling", scaling.run),
            ("fan-in and memory", stores.run),
            ("wire types", wire.run),
            ("users per message", capacity.run),
        ]
        for name, step in steps:
            began = time.perf_counter()
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            done = step(context)
            sections += list(done) if isinstance(done, tuple) else [done]
            print(f"bench: {name}: {time.perf_counter() - began:.0f} s", file=sys.stderr)
    seconds = time.perf_counter() - started

    print()
    print(report.text_table(sections))
    missed = report.misses(sections)
    if missed:
        print(f"\nmissed targets: {len(missed)}")
        for row in missed:
            print(f"  {row.section}: {row.measure}: {row.ours} (target {row.target})")
    if not args.no_write:
        info = report.machine()
        report.write_markdown(args.output, report.markdown(sections, context, info, seconds))
        png = args.output.with_suffix(".png")
        drawn = report.plot(context, png)
        print(f"\nwrote {args.output}" + (f" and {png}" if drawn else " (no matplotlib: no PNG)"))
    print(f"total {seconds:.0f} s")
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    raise SystemExit(main())
