"""TLS (and mTLS) for the gRPC port, reloaded when the files change.

Kubernetes rotates a Secret's files in place; grpc asks `_Reloader` for a fresh
certificate configuration on each new connection, so a rotated certificate is served
from the next connection on and calls in flight are not dropped.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import structlog

log = structlog.get_logger("server.tls")


@dataclass(frozen=True)
class TlsSettings:
    cert_file: str
    key_file: str
    client_ca_file: str | None = None  # set: clients must present a certificate it signed


def server_credentials(settings: TlsSettings) -> Any:
    reloader = _Reloader(settings)
    return grpc.dynamic_ssl_server_credentials(
        reloader.load(),
        reloader.fetch,
        require_client_authentication=settings.client_ca_file is not None,
    )


class _Reloader:
    def __init__(self, settings: TlsSettings) -> None:
        self._settings = settings
        self._files = [Path(settings.cert_file), Path(settings.key_file)]
        if settings.client_ca_file:
            self._files.append(Path(settings.client_ca_file))
        self._lock = threading.Lock()
        self._stamp: tuple[tuple[int, int], ...] = ()

    def load(self) -> Any:
        """The certificate configuration from the files as they are now."""
        with self._lock:
            self._stamp = self._current_stamp()
            certificate = Path(self._settings.cert_file).read_bytes()
            key = Path(self._settings.key_file).read_bytes()
            client_ca = (
                Path(self._settings.client_ca_file).read_bytes()
                if self._settings.client_ca_file
                else None
            )
        return grpc.ssl_server_certificate_configuration([(key, certificate)], client_ca)

    def fetch(self) -> Any:
        """Called by grpc for each new connection: a new configuration if a file changed."""
        try:
            if self._current_stamp() == self._stamp:
                return None
            configuration = self.load()
        except (OSError, ValueError) as error:
            # Half-written files during a rotation: keep serving the previous certificate.
            log.warning("tls.reload_failed", error=type(error).__name__)
            return None
        log.info("tls.reloaded")
        return configuration

    def _current_stamp(self) -> tuple[tuple[int, int], ...]:
        return tuple((path.stat().st_mtime_ns, path.stat().st_size) for path in self._files)
