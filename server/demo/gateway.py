"""Envoy Gateway's part, played locally: run the extension server, call its hook over gRPC.

`ExtensionServerProcess` runs `extension-server serve` as its own process on a free
loopback port, as a cluster would run it next to Envoy Gateway. `GatewayStandIn` sends a
listener and the policies attached to it to PostHTTPListenerModify, exactly as Envoy
Gateway does on each translation, and returns the listener Envoy should get.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.api import extension_pb2, extension_pb2_grpc
from server.demo.envoy import die_with_parent, free_port
from server.demo.files import open_log


class ServerProcess:
    """A gRPC server as its own process on loopback; a context manager that waits for SERVING.

    `command` builds the command line for the port it is given. `env`: the process's
    environment (default: this one's). `new_log`: the log file must not exist yet.
    """

    def __init__(
        self,
        log_path: Path,
        command: Callable[[int], list[str]],
        *,
        timeout: float = 20.0,
        env: Mapping[str, str] | None = None,
        new_log: bool = False,
    ) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        self.command = command(self.port)
        self._timeout = timeout
        self._env = dict(env) if env is not None else None
        self._new_log = new_log
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

    def start(self) -> Self:
        """Start the process and wait until it serves; stop it if that fails or is interrupted.

        `with` calls `__exit__` only after `__enter__` returned, so a failure (or a stop
        signal) while waiting must stop the process here, or it would outlive its owner.
        """
        log = open_log(self.log_path, new=self._new_log)
        try:
            self._process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                preexec_fn=die_with_parent(),  # noqa: PLW1509 (one C call; see there)
            )
        finally:
            os.close(log)
        try:
            self._wait_until_serving()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + self._timeout
        with grpc.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                assert self._process is not None
                if self._process.poll() is not None:
                    raise RuntimeError(f"server exited; see {self.log_path}")
                try:
                    answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"server not serving after {self._timeout}s")
                time.sleep(0.05)

    def stop(self) -> int:
        """SIGTERM, as Kubernetes stops a pod; the exit code."""
        if self._process is None:
            return 0
        self._process.terminate()
        try:
            return self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            return self._process.wait()
        finally:
            self._process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve_command(port: int, *extra_args: str) -> list[str]:
    """`extension-server serve` on 127.0.0.1:`port`, without a metrics endpoint."""
    return [
        sys.executable, "-m", "server", "serve",
        "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0", *extra_args,
    ]  # fmt: skip


# What a local server must not inherit from the user's shell: where their cluster, their
# Vault and their AWS account are, and this server's own settings.
PRIVATE_VARIABLES = ("KUBECONFIG", "KUBERNETES_", "VAULT_", "AWS_", "EXTENSION_SERVER_")


def local_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without PRIVATE_VARIABLES, plus `extra`."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(PRIVATE_VARIABLES)}
    return {**kept, **(extra or {})}


class ExtensionServerProcess(ServerProcess):
    """`extension-server serve` as a cluster would run it next to Envoy Gateway.

    It sees none of the user's cluster, Vault, AWS or extension-server settings unless
    `env` brings them: only `extra_args` configure it.
    """

    def __init__(
        self,
        log_path: Path,
        *extra_args: str,
        timeout: float = 20.0,
        env: Mapping[str, str] | None = None,
        new_log: bool = False,
    ) -> None:
        super().__init__(
            log_path,
            lambda port: serve_command(port, *extra_args),
            timeout=timeout,
            env=local_environment(env),
            new_log=new_log,
        )


class GatewayStandIn:
    """Calls PostHTTPListenerModify the way Envoy Gateway does on every translation."""

    def __init__(self, address: str) -> None:
        self._channel = grpc.insecure_channel(address)
        self._stub = extension_pb2_grpc.EnvoyGatewayExtensionStub(self._channel)  # type: ignore[no-untyped-call]

    def translate(self, listener: Any, policies: Sequence[dict[str, Any]] = ()) -> Any:
        """The listener as the hook returns it, for these attached policies."""
        request = extension_pb2.PostHTTPListenerModifyRequest(listener=listener)
        for policy in policies:
            request.post_listener_context.extension_resources.add(
                unstructured_bytes=json.dumps(policy).encode()
            )
        response = self._stub.PostHTTPListenerModify(request, timeout=10)
        # An unset listener in the response means "no change".
        return response.listener if response.HasField("listener") else listener

    def close(self) -> None:
        self._channel.close()
