"""Build, run and stop the gRPC server: the hook service, health checks and reflection."""

from __future__ import annotations

import errno
import gc
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from backends import CredentialResolver, ResolverSettings
from backends.aws import AwsSecretsManagerStore, AwsSettings
from backends.registry import DEFAULT_LIMIT
from backends.stores import SecretStore
from backends.vault import VaultSettings, VaultStore
from compiler.model import CompileOptions
from server.audit import AuditSettings, build_trail
from server.drain import Drain
from server.events import EventSettings, KubernetesUnreachable, build_recorder
from server.health import SERVICE_NAME as HEALTH_SERVICE
from server.health import HealthService
from server.health import add_to_server as add_health_to_server
from server.logs import get_logger
from server.metrics_http import MetricsServer
from server.outcomes import Observer, Observers
from server.reflection import add_reflection_to_server
from server.report import REPEAT_INTERVAL
from server.rotation import RotationWatcher
from server.service import SERVICE_NAME, CallLimits, ExtensionService, add_to_server
from server.tls import TlsFileError, TlsSettings, server_credentials
from server.version import installed_version

log = get_logger("server.app")


WATCHER_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class RotationSettings:
    interval: float = 0.0  # seconds between polls; 0: no watcher (the CLI's default is 30 s)
    lease_namespace: str | None = None  # None: the pod's own namespace
    lease_name: str = "extension-server-rotation"
    # "auto": on in a Kubernetes pod, off elsewhere (a local run never touches whatever
    # cluster the user's kubeconfig points at); "on", "off": as said.
    watcher: str = "auto"
    max_policies: int = DEFAULT_LIMIT  # policies watched at most


@dataclass(frozen=True)
class ServerSettings:
    host: str = "0.0.0.0"  # noqa: S104 (a server in a pod listens on all addresses)
    port: int = 5005
    workers: int = 16
    shutdown_grace: float = 15.0
    options: CompileOptions = field(default_factory=CompileOptions)
    resolver: ResolverSettings = field(default_factory=ResolverSettings)
    vault: VaultSettings | None = None  # None: no Vault configured
    aws: AwsSettings = field(default_factory=AwsSettings)
    metrics_port: int | None = None  # None: no metrics endpoint
    tls: TlsSettings | None = None  # None: plaintext gRPC (inside the cluster network)
    rotation: RotationSettings = field(default_factory=RotationSettings)
    # Listen on this Unix domain socket instead of host:port (Envoy Gateway's
    # `service.unix.path`, for a server in Envoy Gateway's own pod).
    unix_socket: str | None = None
    limits: CallLimits = field(default_factory=CallLimits)
    # A second port, on the same host, that serves only grpc.health.v1.Health, in plaintext,
    # from the same servicer as the main port: for the kubelet's gRPC probe, which cannot
    # speak TLS. None: no health port.
    health_port: int | None = None
    # How long before a policy's rejection (or another finding about a call) is logged
    # again; 0: at every call.
    log_repeat_interval: float = REPEAT_INTERVAL
    # Kubernetes Events on the policies, and the audit trail (both off unless asked here;
    # the CLI's defaults are auto and stdout).
    events: EventSettings = field(default_factory=EventSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)


def build_resolver(settings: ServerSettings) -> CredentialResolver:
    """The resolver with every configured store behind one shared cache."""
    stores: dict[str, SecretStore] = {"aws": AwsSecretsManagerStore(settings.aws)}
    if settings.vault is not None:
        stores["vault"] = VaultStore(settings.vault)
    return CredentialResolver(settings.resolver, stores)


def in_cluster() -> bool:
    """Whether this process runs in a Kubernetes pod: the kubelet gives every container
    KUBERNETES_SERVICE_HOST and _PORT (client-go's in-cluster configuration asks the same)."""
    return bool(
        os.environ.get("KUBERNETES_SERVICE_HOST") and os.environ.get("KUBERNETES_SERVICE_PORT")
    )


def configured_stores(settings: ServerSettings) -> frozenset[str]:
    """The stores this server can ask: Vault with an address, AWS with a region or role."""
    aws = (
        settings.aws.region
        or settings.aws.role_arn
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
    )
    return frozenset(name for name, on in (("vault", settings.vault), ("aws", aws)) if on)


def build_watcher(
    settings: ServerSettings, resolver: CredentialResolver, observers: Observers | None = None
) -> RotationWatcher | None:
    """The rotation watcher, when a store is configured, the watcher is wanted here (on,
    or auto in a pod), and Kubernetes can be reached."""
    rotation = settings.rotation
    stores = configured_stores(settings)
    if rotation.interval <= 0 or not stores or rotation.watcher == "off":
        return None
    if rotation.watcher == "auto" and not in_cluster():
        log.warning(
            "rotation.disabled",
            reason="not in a Kubernetes pod; --rotation-watcher on runs it with the current "
            "kubeconfig context",
        )
        return None
    # Only a server with a watcher pays for the Kubernetes client (memory, start-up time).
    import httpx2  # noqa: PLC0415
    import lightkube  # noqa: PLC0415

    from server.kube import (  # noqa: PLC0415
        FIELD_MANAGER,
        REQUEST_TIMEOUT,
        LeaseElector,
        PolicyClient,
    )

    try:
        client = lightkube.Client(
            field_manager=FIELD_MANAGER, timeout=httpx2.Timeout(REQUEST_TIMEOUT)
        )
    except (lightkube.ConfigError, KeyError, OSError, ValueError) as error:
        log.warning("rotation.disabled", reason=f"no Kubernetes configuration ({error})")
        return None
    namespace = rotation.lease_namespace or client.namespace
    identity = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    lease_duration = max(3 * rotation.interval, 15.0)
    return RotationWatcher(
        resolver,
        PolicyClient(client),
        LeaseElector(client, namespace, rotation.lease_name, identity, lease_duration),
        rotation.interval,
        stores=stores,
        limit=rotation.max_policies,
        observers=observers,
    )


def build_observers(settings: ServerSettings) -> Observers:
    """What the hook tells about each outcome: Kubernetes Events on the policies and the
    audit trail, each when on. Raises StartupError naming the setting that cannot work."""
    found: list[Observer] = []
    try:
        trail = build_trail(settings.audit)
    except OSError as error:
        raise StartupError(
            "--audit-log",
            f"cannot open {settings.audit.destination} for appending "
            f"({error.strerror or type(error).__name__}); choose a writable file, stdout or off",
        ) from None
    if trail is not None:
        found.append(trail)
    try:
        recorder = build_recorder(settings.events)
    except KubernetesUnreachable as error:
        if trail is not None:
            trail.close(0.0)
        raise StartupError("--kubernetes-events", str(error)) from None
    if recorder is not None:
        found.append(recorder)
    return Observers(found)


class ExtensionServer:
    """The running server; `stop` lets in-flight calls finish first."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.resolver = build_resolver(settings)
        # For the hook: it hands each fresh outcome to these (server/outcomes.py), and for
        # the rotation watcher, which tells them of each rotation it applies.
        self.observers = build_observers(settings)
        self.watcher = build_watcher(settings, self.resolver, self.observers)
        self._drain = Drain()
        limits = settings.limits
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="hook"),
            interceptors=[self._drain],
            options=[
                # A second server on the same port must fail, not silently share it.
                ("grpc.so_reuseport", 0),
                # Bigger messages get RESOURCE_EXHAUSTED from gRPC itself, as in Envoy Gateway.
                ("grpc.max_receive_message_length", limits.max_message_size),
                ("grpc.max_send_message_length", limits.max_message_size),
            ],
            # Calls beyond this many at once get RESOURCE_EXHAUSTED at once.
            maximum_concurrent_rpcs=limits.max_concurrent_calls,
        )
        self._service = ExtensionService(
            self.resolver,
            settings.options,
            limits,
            settings.workers,
            settings.log_repeat_interval,
            self.observers,
        )
        add_to_server(self._service, self._grpc)
        self._health = HealthService()
        add_health_to_server(self._health, self._grpc)
        add_reflection_to_server((SERVICE_NAME, HEALTH_SERVICE), self._grpc, settings.workers)
        address = (
            f"unix:{settings.unix_socket}"
            if settings.unix_socket
            else f"{_bracket(settings.host)}:{settings.port}"
        )
        self.address = address
        self.port = self._bind(address, settings.tls)
        self._health_grpc: Any = None
        self.health_port: int | None = None
        self._metrics: MetricsServer | None = None
        try:
            if settings.health_port is not None:
                self._health_grpc, self.health_port = self._health_server(settings)
            if settings.metrics_port is not None:
                try:
                    self._metrics = MetricsServer(settings.metrics_port, settings.host)
                except OSError as error:
                    raise StartupError(
                        "--metrics-port", _unbindable(settings.host, settings.metrics_port, error)
                    ) from None
                self.metrics_port = self._metrics.port
        except StartupError:
            self._release()
            raise

    def _bind(self, address: str, tls: TlsSettings | None) -> int:
        """The gRPC port, bound now: a port in use (or a TLS file gone bad since the checks)
        ends the start, naming the setting."""
        setting = "--unix-socket" if address.startswith("unix:") else "--port"
        if setting == "--port":
            _probe("--port", self.settings.host, self.settings.port)
        try:
            credentials = server_credentials(tls) if tls is not None else None
        except TlsFileError as error:
            raise StartupError(error.setting, str(error)) from None
        try:
            port = (
                self._grpc.add_secure_port(address, credentials)
                if credentials is not None
                else self._grpc.add_insecure_port(address)
            )
        except RuntimeError:
            port = 0
        if not port:
            raise StartupError(
                setting,
                f"cannot listen on {address} (in use by another process, or not an address "
                "of this host); stop what uses it or choose another",
            )
        return int(port)

    def _release(self) -> None:
        """Give back what a start that failed half-way had bound."""
        self.observers.close(0.0)
        self._grpc.stop(None)
        if self._health_grpc is not None:
            self._health_grpc.stop(None)
        if self._metrics is not None:
            self._metrics.close()

    def _health_server(self, settings: ServerSettings) -> tuple[Any, int]:
        """A plaintext server with the health service only, the very servicer of the main
        port: what one reports (NOT_SERVING while draining) the other reports too."""
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="health"),
            options=[("grpc.so_reuseport", 0)],  # a taken port fails, as the main one
            maximum_concurrent_rpcs=8,  # probes are few; Watch streams cannot pile up
        )
        # Nothing else on this port: no hook service, no reflection.
        add_health_to_server(self._health, server)
        address = f"{_bracket(settings.host)}:{settings.health_port}"
        _probe("--health-port", settings.host, settings.health_port)
        try:
            port = server.add_insecure_port(address)
        except RuntimeError:
            port = 0
        if not port:
            raise StartupError(
                "--health-port",
                f"cannot listen on {address} (in use by another process); choose another",
            )
        return server, port

    def start(self) -> None:
        # Everything built so far (the Envoy API's descriptors and modules, the settings)
        # lives as long as the process: out of the collector's sight, a full collection
        # walks only what calls allocate, and no call waits behind a walk of the rest.
        gc.freeze()
        self._grpc.start()
        if self._health_grpc is not None:
            self._health_grpc.start()
        for service in ("", SERVICE_NAME):
            self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "server.started",
            version=installed_version(),
            address=self.address,
            port=self.port,
            health_port=self.health_port if self.health_port is not None else "off",
            unprotected_listeners=self.settings.options.unprotected.value,
            tls="mtls"
            if self.settings.tls and self.settings.tls.client_ca_file
            else "tls"
            if self.settings.tls
            else "off",
            vault=self.settings.vault.addr if self.settings.vault else "off",
            rotation_watcher="on" if self.watcher else "off",
        )
        if self.watcher is not None:
            self.watcher.start()
        self.observers.start()

    def stop(self) -> None:
        """Give the Lease up, report NOT_SERVING, refuse new calls, let in-flight ones
        finish, then close: all of it within the shutdown grace, whatever clients do.

        Nothing here waits on a client without a bound: the Lease is given up on a thread
        of its own from the first moment, the health service's status change returns at
        once (server/health.py), after the drain the health Watch streams are ended, and
        whatever is still open when the grace runs out is cancelled.
        """
        grace = self.settings.shutdown_grace
        deadline = time.monotonic() + grace
        log.info("server.stopping", grace_seconds=grace, calls_in_flight=self._drain.active)
        watcher = _begin(self.watcher.stop, deadline) if self.watcher is not None else None
        self._health.enter_graceful_shutdown()
        if not self._drain.drain(_left(deadline)):
            log.warning("server.drain_timeout", calls_in_flight=self._drain.active)
        # Health Watch streams end on their own now; what is left (answers still reaching
        # slow clients, reflection streams) has the rest of the grace, then is cancelled.
        self._health.end_watches()
        self._grpc.stop(_left(deadline)).wait(_left(deadline) + 1)
        if self._health_grpc is not None:
            # After the drain, as the main port: probes heard NOT_SERVING all along.
            self._health_grpc.stop(None).wait(_left(deadline) + 1)
        if self._metrics is not None:
            self._metrics.close()
        if watcher is not None:
            watcher.join(_left(deadline))  # before the stores it polls are closed
        self._service.close()
        # Events and audit lines still queued, within what is left of the grace.
        self.observers.close(_left(deadline))
        closing = _begin(self.resolver.close)  # waits for fetches in flight
        closing.join(_left(deadline))
        log.info("server.stopped")


def _begin(step: Callable[..., None], *args: Any) -> threading.Thread:
    """Run a shutdown step on a thread of its own, so that the caller bounds the wait."""
    thread = threading.Thread(target=step, args=args, name="stopping", daemon=True)
    thread.start()
    return thread


SIGNAL_CHECK = 0.2  # seconds between the main thread's looks for a stop signal


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def serve(settings: ServerSettings) -> int:
    """Run until SIGTERM or SIGINT, then shut down cleanly; the process exit code."""
    server = ExtensionServer(settings)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("server.signal", signal=signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        # Not one wait without end: Python runs a signal's handler in the main thread, and
        # a signal the kernel hands to one of gRPC's threads does not wake a main thread
        # blocked on a lock, so SIGTERM would wait for something else to wake it.
        while not stop.wait(SIGNAL_CHECK):
            pass
        server.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


class StartupError(Exception):
    """The server could not start: `setting` names the flag to look at."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(problem)
        self.setting = setting

    def __str__(self) -> str:
        return f"{self.setting}: {self.args[0]}"


def _probe(setting: str, host: str, port: int | None) -> None:
    """Bind `host:port` for a moment: a port in use is then reported in one line of ours,
    before gRPC's own bind, which would also print a line of its C core's."""
    if not port:
        return
    try:
        family, kind, proto, _, where = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.bind(where)
    except OSError as error:
        not_ours = isinstance(error, socket.gaierror) or error.errno == errno.EADDRNOTAVAIL
        named = "--host" if not_ours else setting
        raise StartupError(named, _unbindable(host, port, error)) from None


def _unbindable(host: str, port: int, error: OSError) -> str:
    why = error.strerror or type(error).__name__
    return f"cannot listen on {_bracket(host)}:{port} ({why}); stop what uses it or choose another"


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
