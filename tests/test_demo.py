"""`extension-server demo` as a user runs it: the console script, a real Envoy, real signals.

Every process the demo starts inherits its environment, so each run gets a marker variable
of its own and the tests find every one of them in /proc, whoever their parent is by
then. That is how they prove that nothing the demo started outlives it, whether it ends
on its own, is stopped by a signal, or is killed outright.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.demo.story import MISSING_CREDENTIALS, WHAT_IT_SHOWS
from tests.support.commands import EXTENSION_SERVER

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")

# Not EXTENSION_SERVER_*: the demo's extension server gets none of those (the user's own).
MARKER = "DEMO_TEST_RUN"
FINAL_LINE = f"All steps behaved as expected: {WHAT_IT_SHOWS}."
LOG_LINE = re.compile(r"\(log: (?P<path>.+)/extension-server\.log\)")


def processes_of_run(run: str) -> list[int]:
    """Every live process that carries this run's marker (a zombie's environ reads empty)."""
    needle = f"{MARKER}={run}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def describe(pids: list[int]) -> str:
    """Each survivor's command line, for the failure message."""
    lines = []
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            command = "(gone)"
        lines.append(f"{pid}: {command}")
    return "\n".join(lines)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A marker for one demo run and the environment to start it with; a process of the
    run still alive at the end (a failed test) is ended, by its id, so none leaks."""
    marker = uuid.uuid4().hex
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EXTENSION_SERVER_")}
    yield marker, {**clean, MARKER: marker}
    for pid in processes_of_run(marker):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def start_demo(env: dict[str, str]) -> subprocess.Popen[str]:
    """The demo with its stdout and stderr in one pipe (the demo prints a password: no file)."""
    return subprocess.Popen(
        [EXTENSION_SERVER, "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def read_until(demo: subprocess.Popen[str], prefix: str) -> str:
    """The demo's output up to and including the first line that starts with `prefix`."""
    assert demo.stdout is not None
    seen = []
    for line in demo.stdout:
        seen.append(line)
        if line.startswith(prefix):
            return "".join(seen)
    pytest.fail(f"the demo ended without a line starting {prefix!r}:\n{''.join(seen)}")


def test_the_demo_shows_401_then_200_then_401_and_leaves_nothing_behind(
    run: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    marker, env = run
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    result = subprocess.run(
        [EXTENSION_SERVER, "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "TMPDIR": str(temporary)},
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith(f"through the hook: {WHAT_IT_SHOWS}.")  # what it shows, first
    unauthorized = lines.index("< HTTP/1.1 401 Unauthorized")
    assert lines[unauthorized:].index(f"  {MISSING_CREDENTIALS}") > 0
    ok = lines.index("< HTTP/1.1 200 OK")
    assert unauthorized < ok
    assert "  ok: the backend sees X-Example-Ext: user" in lines[ok:]
    assert lines[-1] == FINAL_LINE
    assert "FAIL" not in result.stdout
    assert result.stderr == ""

    assert processes_of_run(marker) == [], describe(processes_of_run(marker))
    match = LOG_LINE.search(result.stdout)
    assert match, result.stdout
    workdir = Path(match["path"])
    assert workdir.parent == temporary  # a temporary directory, as none was given ...
    assert not workdir.exists()  # ... and removed after
    assert list(temporary.iterdir()) == []


@pytest.mark.parametrize(
    ("signum", "status"),
    [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)],
    ids=["SIGTERM", "SIGINT", "SIGHUP"],
)
def test_a_stop_signal_stops_everything_the_demo_started(
    run: tuple[str, dict[str, str]], tmp_path: Path, signum: signal.Signals, status: int
) -> None:
    marker, env = run
    workdir = tmp_path / "work"
    # Through its variable (every option has one): the given directory is kept after.
    demo = start_demo({**env, "EXTENSION_SERVER_WORKDIR": str(workdir)})
    shown = read_until(demo, "envoy:")
    assert len(processes_of_run(marker)) >= 3  # the demo, the extension server, Envoy

    demo.send_signal(signum)
    rest, _ = demo.communicate(timeout=60)

    output = shown + rest
    assert demo.returncode == status, output
    assert f"Stopped by {signum.name}" in rest
    assert "Traceback" not in output
    assert processes_of_run(marker) == [], describe(processes_of_run(marker))
    assert f"(log: {workdir}/extension-server.log)" in output
    assert (workdir / "extension-server.log").is_file()


@pytest.mark.skipif(os.uname().sysname != "Linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_what_the_demo_started_dies_with_it_even_on_sigkill(
    run: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    marker, env = run
    demo = start_demo({**env, "EXTENSION_SERVER_WORKDIR": str(tmp_path / "work")})
    read_until(demo, "envoy:")
    started = processes_of_run(marker)
    assert demo.pid in started and len(started) >= 3

    demo.kill()  # no handler runs: only the children's parent-death signal can stop them
    demo.communicate(timeout=60)

    deadline = time.monotonic() + 60  # a bound on waiting, not a claim about speed
    while processes_of_run(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_of_run(marker) == [], describe(processes_of_run(marker))
