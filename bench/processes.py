"""Servers as their own processes on loopback, started and awaited as the demo does it."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.demo.envoy import free_port


def our_command(port: int, *extra: str) -> list[str]:
    """Exactly the command `server.demo.gateway.ExtensionServerProcess` runs."""
    return [
        sys.executable, "-m", "server", "serve",
        "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0",
        "--log-level", "warning", *extra,
    ]  # fmt: skip


def baseline_command(port: int) -> list[str]:
    return [
        sys.executable, "-m", "bench.passthrough",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "16",
    ]  # fmt: skip


class ServerProcess:
    """A gRPC server process; a context manager that waits until its health says SERVING."""

    def __init__(self, label: str, command: Callable[[int], list[str]], log_path: Path) -> None:
        self.label = label
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        self.command = command(self.port)
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def ours(cls, log_path: Path, *extra: str) -> ServerProcess:
        return cls("ours", lambda port: our_command(port, *extra), log_path)

    @classmethod
    def baseline(cls, log_path: Path) -> ServerProcess:
        return cls("baseline", baseline_command, log_path)

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

    def rss_bytes(self) -> int:
        """VmRSS of the process, from /proc/<pid>/status."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for pid {self.pid}")

    def start(self, timeout: float = 30.0) -> ServerProcess:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            checks = health_pb2_grpc.HealthStub(channel)
            while True:
                if self._process.poll() is not None:
                    raise RuntimeError(f"{self.label} server exited; see {self.log_path}")
                try:
                    answer = checks.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return self
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.label} server not serving after {timeout}s")
                time.sleep(0.05)

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
