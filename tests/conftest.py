"""Suite-wide fixtures: the no-secrets-in-logs check, and a real `extension-server serve`.

Every log the suite produces, from servers run in-process (sent to one file by
`_logs_hold_no_secret`) and from subprocesses (their `*.log`, `*.stdout`, `*.stderr`
files under pytest's temporary directory), is read at the end of the session: a test
password, token or any `{SHA}` hash in any of them fails the run.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from server import logs
from tests.support.commands import EXTENSION_SERVER
from tests.support.secrets import leaks, log_files, remember
from tests.support.vault import ROOT_TOKEN, VaultStandIn


def wait_until_serving(target: str, timeout: float = 15.0) -> None:
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=timeout)


# Test-side libraries running in this process that log the test data they are given
# (moto's request bodies, cel-python's activations): not the product's logs.
TEST_LIBRARY_LOGGERS = ("moto", "werkzeug", "celpy")


@pytest.fixture(scope="session", autouse=True)
def _logs_hold_no_secret(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    root = tmp_path_factory.getbasetemp()
    with (root / "in-process.log").open("w") as in_process:
        logs.configure("debug", "logfmt", stream=in_process)
        for name in TEST_LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        yield
    found = leaks(
        (str(path.relative_to(root)), path.read_text(errors="replace")) for path in log_files(root)
    )
    if found:
        pytest.fail("secrets in logs:\n" + "\n".join(sorted(set(found))), pytrace=False)


class ServedProcess:
    """A real `extension-server serve` process; its stdout and stderr go to files."""

    def __init__(self, tmp: Path, args: list[str], env: dict[str, str] | None = None) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("EXTENSION_SERVER_")}
        self.stdout_path, self.stderr_path = tmp / "server.stdout", tmp / "server.stderr"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                [EXTENSION_SERVER, "serve", *args],
                stdout=out,
                stderr=err,
                # no metrics endpoint unless a test asks: several servers run at once
                env={**clean, "EXTENSION_SERVER_METRICS_PORT": "0", **(env or {})},
            )

    def send(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def stop(self, signum: signal.Signals = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send `signum` once and return the exit status."""
        self.send(signum)
        return self.wait(timeout)

    def wait(self, timeout: float = 20.0) -> int:
        return self.process.wait(timeout=timeout)

    @property
    def output(self) -> str:
        return self.stdout_path.read_text() + self.stderr_path.read_text()

    @property
    def log_lines(self) -> list[str]:
        return [line for line in self.output.splitlines() if line.strip()]

    def wait_for_log(self, text: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert self.process.poll() is None, f"server exited early:\n{self.output}"
            assert time.monotonic() < deadline, f"no {text!r} in the log:\n{self.output}"
            time.sleep(0.02)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Any]:
    """Start `extension-server serve ARGS` (with ENV) and wait until it answers on PORT."""
    started: list[ServedProcess] = []

    def start(args: list[str], port: int, env: dict[str, str] | None = None) -> ServedProcess:
        workdir = tmp_path / f"server-{len(started)}"
        workdir.mkdir()
        process = ServedProcess(workdir, args, env)
        started.append(process)
        process.wait_for_log("server.started")
        wait_until_serving(f"127.0.0.1:{port}")
        return process

    yield start
    for process in started:
        if process.process.poll() is None:
            process.process.kill()
            process.process.wait()


@pytest.fixture
def vault() -> Iterator[VaultStandIn]:
    """The Vault stand-in, holding no secret yet; ROOT_TOKEN is valid in it for every path.

    A test that needs other tokens (narrow policies, a namespace, a TTL) adds them with
    `vault.add_token`.
    """
    remember(ROOT_TOKEN)
    with VaultStandIn() as standin:
        standin.add_token(ROOT_TOKEN)
        yield standin
