"""`extension-server demo`: the seed's Testing section, on this machine, with a real Envoy.

It starts the extension server, an echo backend and Envoy; plays Envoy Gateway's part
(calls the hook with a listener and its policies, hands the result to Envoy through the
file Envoy watches); shows the 401 without a policy, applies the seed's policy, and shows
the 200 with the backend seeing `X-Example-Ext: user`. Every process it starts is stopped
on the way out, whatever happens.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

from server.demo.envoy import HttpResponse, http_get
from server.demo.stack import HOST, LISTENER_NAME, PATH, local_gateway
from server.manifests import load_yaml_documents

# The policy exactly as the seed's Testing section applies it.
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


def seed_policy(namespace: str = "default") -> dict[str, Any]:
    """The seed's policy as the API server hands it to Envoy Gateway (namespace filled in)."""
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


def run_demo(workdir: Path | None = None, say: Callable[[str], None] = print) -> int:
    """Run the story; 0 if Envoy answered every step as the seed says, else 1."""
    with _workdir(workdir) as directory:
        demo = Demo(directory, say)
        try:
            _story(demo)
        except Exception as error:  # the demo reports, cleans up and exits 1
            say(f"FAIL: {error.__class__.__name__}: {error}")
            return 1
        say("")
        say(
            "All steps behaved as the seed's Testing section shows."
            if not demo.failures
            else f"{demo.failures} step(s) did not behave as expected."
        )
        return 1 if demo.failures else 0


def _story(demo: Demo) -> None:
    say = demo.say
    say("== Starting the extension server, an echo backend and Envoy")
    with local_gateway(demo.workdir) as local:
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
    if requested is not None:
        requested.mkdir(parents=True, exist_ok=True)
        yield requested
        return
    directory = Path(tempfile.mkdtemp(prefix="extension-server-demo-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_demo())
