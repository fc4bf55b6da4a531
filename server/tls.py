"""TLS (and mTLS) for the gRPC port, reloaded when the files change.

Kubernetes rotates a Secret's files in place; grpc asks `_Reloader` for a fresh
certificate configuration on each new connection, so a rotated certificate is served
from the next connection on and calls in flight are not dropped. Files are parsed, and the
key matched to the certificate, before they are used, at start and at every reload: an
empty, half-written or mismatched file is reported and the previous certificate kept, since
a server that refuses Envoy Gateway's handshakes freezes every Gateway as surely as a hook
error does.
"""

from __future__ import annotations

import ssl
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


class TlsFileError(ValueError):
    """A TLS file that cannot be used: `setting` names the flag, the message what is wrong."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(problem)
        self.setting = setting


@dataclass(frozen=True)
class _Files:
    """The bytes of the TLS files, checked to be usable together."""

    certificate: bytes
    key: bytes
    client_ca: bytes | None


def check_files(settings: TlsSettings) -> None:
    """Raise TlsFileError unless the files hold a certificate, its key and (if set) a CA."""
    _read_checked(settings)


def server_credentials(settings: TlsSettings) -> Any:
    reloader = _Reloader(settings)
    return grpc.dynamic_ssl_server_credentials(
        reloader.load(),
        reloader.fetch,
        require_client_authentication=settings.client_ca_file is not None,
    )


def _read_checked(settings: TlsSettings) -> _Files:
    """The files' bytes, once the certificate, the key and the CA have been parsed and the
    key matched to the certificate (by the ssl module, as a TLS server would)."""
    stamp = _stamp(settings)
    certificate = _read("--tls-cert-file", settings.cert_file)
    key = _read("--tls-key-file", settings.key_file)
    client_ca = (
        _read("--tls-client-ca-file", settings.client_ca_file) if settings.client_ca_file else None
    )
    _check_certificates("--tls-cert-file", certificate)
    if b"PRIVATE KEY-----" not in key:
        raise TlsFileError("--tls-key-file", f"{settings.key_file} holds no PEM private key")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
            settings.cert_file, settings.key_file
        )
    except (ssl.SSLError, OSError):
        raise TlsFileError(
            "--tls-key-file",
            f"{settings.key_file} is not the private key of the certificate in "
            f"{settings.cert_file} (or cannot be read)",
        ) from None
    if client_ca is not None:
        _check_certificates("--tls-client-ca-file", client_ca)
    if _stamp(settings) != stamp:
        raise TlsFileError("--tls-cert-file", "the TLS files changed while they were read")
    return _Files(certificate, key, client_ca)


def _read(setting: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise TlsFileError(
            setting, f"{path} cannot be read ({error.strerror or type(error).__name__})"
        ) from None


def _check_certificates(setting: str, pem: bytes) -> None:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(
            cadata=pem.decode("ascii", errors="replace")
        )
    except (ssl.SSLError, ValueError):
        raise TlsFileError(setting, "holds no PEM certificate") from None


def _stamp(settings: TlsSettings) -> tuple[tuple[int, int], ...]:
    paths = [settings.cert_file, settings.key_file, settings.client_ca_file]
    stamps = []
    for path in filter(None, paths):
        try:
            status = Path(path).stat()
        except OSError:
            stamps.append((-1, -1))
        else:
            stamps.append((status.st_mtime_ns, status.st_size))
    return tuple(stamps)


class _Reloader:
    def __init__(self, settings: TlsSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._stamp: tuple[tuple[int, int], ...] = ()
        self._refused: tuple[tuple[int, int], ...] | None = None  # files last found unusable

    def load(self) -> Any:
        """The certificate configuration from the files as they are now (checked)."""
        with self._lock:
            stamp = _stamp(self._settings)
            files = _read_checked(self._settings)
            self._stamp = stamp
        return grpc.ssl_server_certificate_configuration(
            [(files.key, files.certificate)], files.client_ca
        )

    def fetch(self) -> Any:
        """Called by grpc for each new connection: a new configuration if a file changed.

        Files found unusable are looked at again (and reported again) only once they change.
        """
        stamp = _stamp(self._settings)
        if stamp in (self._stamp, self._refused):
            return None
        try:
            configuration = self.load()
        except TlsFileError as error:
            # Half-written or wrong files during a rotation: keep serving the previous
            # certificate until the files change again.
            self._refused = stamp
            log.warning("tls.reload_failed", setting=error.setting, problem=str(error))
            return None
        log.info("tls.reloaded")
        return configuration
