"""`extension-server demo`: a policy at work in a real Envoy, on this machine.

It starts the extension server, an echo backend and Envoy; plays Envoy Gateway's part
(calls the hook with a listener and its policies, hands the result to Envoy through the
file Envoy watches); shows the 401 without a policy, applies the policy of Envoy Gateway's
extension-server task, and shows the 200 with the backend seeing `X-Example-Ext: user`.
Every process it starts is stopped on the way out, whatever happens: SIGINT, SIGTERM and
SIGHUP unwind the story like an error does, and the demo then exits 128 + the signal's
number, as a shell reports it.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from http import HTTPStatus
from pathlib import Path
from types import FrameType
from typing import Any

from server.demo.envoy import HttpResponse, http_get
from server.demo.files import DIRECTORY_MODE, WorkdirError
from server.demo.stack import HOST, LISTENER_NAME, PATH, local_gateway
from server.manifests import load_yaml_documents

# The policy exactly as Envoy Gateway's extension-server task applies it.
SEED_POLICY = """\
apiVersion: example.extensions.io/v1alpha1
kind: ListenerContextExample
metadata:
  name: listeneruser
spec:
  targetRefs:
  - kind: Gateway
    name: eg
    group: gateway.networking.k8s.io
  username: user
  password: p@ssw0rd
"""
MISSING_CREDENTIALS = "User authentication failed. Missing username and password."
WHAT_IT_SHOWS = (
    "401 without credentials, 200 with user:p@ssw0rd and the backend seeing "
    "X-Example-Ext: user, 401 with a wrong password"
)
EXIT_UNUSABLE_WORKDIR = 2  # as a usage error: the demo could not start
# The signals that stop a program run from a terminal, by Ctrl-C, `kill` or a closed terminal.
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def seed_policy(namespace: str = "default") -> dict[str, Any]:
    """SEED_POLICY as the API server hands it to Envoy Gateway (namespace filled in)."""
    (policy,) = load_yaml_documents(SEED_POLICY)
    policy["metadata"]["namespace"] = namespace
    return dict(policy)


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class Demo:
    """The running pieces; `step` prints what happens, `check` what was expected."""

    def __init__(self, workdir: Path, say: Callable[[str], None]) -> None:
        self.workdir = workdir
        self.say = say
        self.failures = 0

    def curl(self, port: int, headers: dict[str, str] | None = None) -> HttpResponse:
        sent = {"Host": HOST, **(headers or {})}
        self.say(f"> GET {PATH} HTTP/1.1")
        for name, value in sent.items():
            self.say(f"> {name}: {value}")
        response = http_get(f"http://127.0.0.1:{port}{PATH}", headers=sent)
        self.say(f"< HTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}")
        for name, value in response.headers.items():
            self.say(f"< {name}: {value}")
        self.say("<")
        for line in response.body.splitlines() or [""]:
            self.say(f"  {line}")
        return response

    def check(self, ok: bool, expectation: str) -> None:
        self.say(f"{'  ok' if ok else 'FAIL'}: {expectation}")
        self.failures += 0 if ok else 1


class Stopped(BaseException):
    """A stop signal arrived. Not an Exception, so that nothing on the way swallows it: it
    unwinds every `with` of the story, and each of them stops the process it started."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """Turn the first SIGINT, SIGTERM or SIGHUP into `Stopped`; ignore the ones after it.

    Python's defaults end the process on SIGTERM and SIGHUP without unwinding anything,
    which left Envoy, the extension server and the temporary directory behind. Later
    signals are ignored so that they cannot cut the cleanup short (each stop is bounded).
    Handlers can only be set from the main thread; elsewhere the defaults stay.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def stop(signum: int, _frame: FrameType | None) -> None:
        if not received:
            received.append(signum)
            raise Stopped(signum)

    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def say_now(line: str) -> None:
    """Print a line at once, also into a pipe or file (`make demo | tee`, a test), where
    Python would otherwise hold it back until a buffer fills or the demo ends."""
    print(line, flush=True)


def run_demo(workdir: Path | None = None, say: Callable[[str], None] = say_now) -> int:
    """Run the story; 0 if Envoy answered every step as expected, 1 if not, and
    128 + the signal's number (130 for SIGINT, 143 for SIGTERM) when a signal stopped it."""
    try:
        with _stopped_by_signals():
            return _run(workdir, say)
    except Stopped as stopped:
        say("")
        say(f"Stopped by {stopped}: every process the demo started has been stopped.")
        return 128 + stopped.signum
    except WorkdirError as error:
        print(f"error: --workdir: {error}", file=sys.stderr, flush=True)
        return EXIT_UNUSABLE_WORKDIR


def _run(workdir: Path | None, say: Callable[[str], None]) -> int:
    """The story in its work directory, removed after unless the caller chose it."""
    with _workdir(workdir) as directory:
        demo = Demo(directory, say)
        try:
            _story(demo)
        except WorkdirError:
            raise
        except Exception as error:  # the demo reports, cleans up and exits 1
            say(f"FAIL: {error.__class__.__name__}: {error}")
            return 1
        say("")
        say(
            f"All steps behaved as expected: {WHAT_IT_SHOWS}."
            if not demo.failures
            else f"{demo.failures} step(s) did not behave as expected."
        )
        return 1 if demo.failures else 0


def _story(demo: Demo) -> None:
    say = demo.say
    say(f"This demo adds basic authentication to a listener through the hook: {WHAT_IT_SHOWS}.")
    say("")
    say("== Starting the extension server, an echo backend and Envoy")
    # Nothing of the user's environment: no kubeconfig, Vault or AWS settings, no
    # EXTENSION_SERVER_* variables. The policy's password is in the policy.
    with local_gateway(demo.workdir, "--rotation-watcher", "off") as local:
        say(f"extension server: gRPC on {local.server.address} (log: {local.server.log_path})")
        say(f"echo backend:     http://127.0.0.1:{local.backend.port}")
        say(f"envoy:            pid {local.envoy.pid}, admin {local.envoy.admin_url}")
        say(f"gateway:          listener {LISTENER_NAME} on 127.0.0.1:{local.port}")
        envoy, port = local.envoy, local.port

        say("")
        say("== Envoy Gateway translates the Gateway; no ListenerContextExample exists yet")
        local.apply()
        response = demo.curl(port)
        demo.check(response.status == 401, "401 Unauthorized")
        demo.check(response.body.strip() == MISSING_CREDENTIALS, f"body is {MISSING_CREDENTIALS!r}")
        demo.check(
            response.headers.get("www-authenticate") == f'Basic realm="http://{HOST}{PATH}"',
            "www-authenticate names the realm",
        )

        say("")
        say("== kubectl apply -f - <<EOF")
        for line in SEED_POLICY.splitlines():
            say(f"   {line}")
        say("   EOF")
        say("   (Envoy Gateway re-translates and calls the hook with the policy attached)")
        pid = envoy.pid
        local.apply([seed_policy()])
        response = demo.curl(port, basic("user", "p@ssw0rd"))
        demo.check(response.status == 200, "200 OK with user:p@ssw0rd")
        headers = response.json().get("headers", {}) if response.status == 200 else {}
        demo.check(headers.get("X-Example-Ext") == ["user"], "the backend sees X-Example-Ext: user")
        demo.check(envoy.pid == pid, "Envoy reloaded the listener without restarting")

        say("")
        say("== The same request with a wrong password")
        response = demo.curl(port, basic("user", "wrong"))
        demo.check(response.status == 401, "401 Unauthorized")


@contextlib.contextmanager
def _workdir(requested: Path | None) -> Iterator[Path]:
    """`requested` (created owner-only if missing, kept after), or a temporary directory."""
    if requested is not None:
        requested.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
        yield requested
        return
    directory = Path(tempfile.mkdtemp(prefix="extension-server-demo-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_demo())
