"""Servers as their own processes on loopback, started and awaited as the demo does it."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from server.demo.gateway import ServerProcess, serve_command


def baseline_command(port: int) -> list[str]:
    return [
        sys.executable, "-m", "bench.passthrough",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "16",
    ]  # fmt: skip


class BenchServer(ServerProcess):
    """A measured server process: ours or the pass-through baseline, with its memory."""

    def __init__(self, label: str, command: Callable[[int], list[str]], log_path: Path) -> None:
        super().__init__(log_path, command, timeout=30.0)
        self.label = label

    @classmethod
    def ours(cls, log_path: Path, *extra: str) -> BenchServer:
        return cls(
            "ours", lambda port: serve_command(port, "--log-level", "warning", *extra), log_path
        )

    @classmethod
    def baseline(cls, log_path: Path) -> BenchServer:
        return cls("baseline", baseline_command, log_path)

    def rss_bytes(self) -> int:
        """VmRSS of the process, from /proc/<pid>/status."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for pid {self.pid}")
