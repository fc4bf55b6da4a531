"""AWS Secrets Manager (and STS, IAM) for tests: moto in HTTP server mode, on loopback.

`MotoServer` runs moto's `ThreadedMotoServer` on 127.0.0.1 on a free port, so the real
boto3 client talks HTTP to it exactly as it talks to AWS. It also notes every request
that reaches the server (service, action, access key id), so a test can say "this made
exactly one GetSecretValue" or "nothing reached Secrets Manager" without mocking the
client, and can make every answer slow (`latency`). `/moto-api/` calls (reset, auth
switch) are neither counted nor delayed.

moto keeps its state (and the IAM-enforcement switch) per process, not per server:
`reset()` wipes both, and tests call it between stories.
"""

from __future__ import annotations

import io
import os
import re
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import boto3
from moto.server import ThreadedMotoServer

from server.demo.envoy import free_port

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
DUMMY_KEY = "testing"  # never real credentials: moto accepts any signature while auth is off

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/[^/]+/[^/]+/([^/]+)/")
_QUERY_ACTION = re.compile(rb"(?:^|&)Action=([A-Za-z]+)")


@dataclass(frozen=True)
class Request:
    """One AWS API request that reached moto."""

    service: str  # "secretsmanager", "sts", "iam" (from the SigV4 credential scope)
    action: str  # "GetSecretValue", "AssumeRole", ...
    access_key: str  # who signed it
    session_token: bool  # signed with temporary (assumed-role) credentials


class MotoServer:
    """moto's ThreadedMotoServer on 127.0.0.1:<free port>; a context manager."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._lock = threading.Lock()
        self._requests: list[Request] = []
        self.running = False
        self.latency = 0.0  # seconds each AWS API request waits before moto answers it

    def start(self) -> Self:
        self._moto.start()
        # Count at the server, not in the client: what counts is what reached "AWS".
        # ThreadedMotoServer has no hook for this; its werkzeug server serves `.app`.
        wsgi_server = self._moto._server
        assert wsgi_server is not None
        wsgi_server.app = self._counting(wsgi_server.app)
        self.running = True
        return self

    def stop(self) -> None:
        """Stop serving and close the port: the next request is refused, as by a dead host."""
        if not self.running:
            return
        self.running = False
        wsgi_server = self._moto._server
        self._moto.stop()
        if wsgi_server is not None:
            # ThreadedMotoServer.stop() leaves the socket listening (connections would hang).
            wsgi_server.server_close()

    def reset(self) -> None:
        """Forget every secret, user and role; IAM enforcement off; no latency; no log."""
        self.latency = 0.0
        self._post("/moto-api/reset", b"")
        self.enforce_iam(False)
        self.clear_requests()

    def enforce_iam(self, on: bool = True) -> None:
        """Make moto authenticate and authorize every request by IAM policies (or stop).

        This is moto's INITIAL_NO_AUTH_ACTION_COUNT, set in server mode through
        `/moto-api/reset-auth` (0: check from the next request on; inf: never).
        """
        self._post("/moto-api/reset-auth", b"0" if on else b"inf")

    # --- what reached the server -------------------------------------------------------

    def requests(self, service: str | None = None, action: str | None = None) -> list[Request]:
        with self._lock:
            return [
                r
                for r in self._requests
                if (service is None or r.service == service)
                and (action is None or r.action == action)
            ]

    def count(self, service: str | None = None, action: str | None = None) -> int:
        return len(self.requests(service, action))

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # --- clients for setting the scene ---------------------------------------------------

    def client(self, service: str, **credentials: str) -> Any:
        """A boto3 client of `service` on this server, with dummy (or given) credentials."""
        session: Any = boto3.session.Session(
            aws_access_key_id=credentials.get("aws_access_key_id", DUMMY_KEY),
            aws_secret_access_key=credentials.get("aws_secret_access_key", DUMMY_KEY),
            region_name=REGION,
        )
        return session.client(service, endpoint_url=self.endpoint_url)

    def secrets_client(self) -> Any:
        """Secrets Manager, as the team that stores its passwords there uses it."""
        return self.client("secretsmanager")

    # --- internals -----------------------------------------------------------------------

    def _post(self, path: str, data: bytes) -> None:
        request = urllib.request.Request(
            self.endpoint_url + path,
            data=data,
            method="POST",
            # not a form: moto reads reset-auth's count from the raw body
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.status == 200, answer.status

    def _counting(self, app: Any) -> Any:
        def counted(environ: dict[str, Any], start_response: Any) -> Any:
            if not environ.get("PATH_INFO", "").startswith("/moto-api/"):
                self._note(environ)
                if self.latency:
                    time.sleep(self.latency)  # a slow network or a busy AWS
            return app(environ, start_response)

        return counted

    def _note(self, environ: dict[str, Any]) -> None:
        match = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
        access_key, service = match.groups() if match else ("", "")
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target:  # JSON protocol (Secrets Manager): "secretsmanager.GetSecretValue"
            action = target.rpartition(".")[2]
        else:  # query protocol (STS, IAM): Action=... in the form body
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)
            found = _QUERY_ACTION.search(body)
            action = found.group(1).decode() if found else ""
        with self._lock:
            self._requests.append(
                Request(service, action, access_key, "HTTP_X_AMZ_SECURITY_TOKEN" in environ)
            )

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def secrets_client(server: MotoServer) -> Any:
    """A boto3 Secrets Manager client on `server`, for setting up a test's secrets."""
    return server.secrets_client()


def dummy_aws_environment(monkeypatch: Any, home: Path) -> None:
    """An environment holding moto's dummy credentials and nothing else of AWS (or of the
    machine's own AWS configuration), set through pytest's `monkeypatch`."""
    for name in [*os.environ]:
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", DUMMY_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", DUMMY_KEY)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
