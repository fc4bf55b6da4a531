"""The rotation watcher: a password rotated in a store reaches the gateways on its own.

Envoy Gateway calls the hook only when it re-translates, and it re-translates a policy
only when the policy's spec changes. So every `--rotation-poll-interval` (with jitter)
the watcher asks each store for the current version of every secret the served policies
use: one request per secret, however many policies share it. When a version changed, it
refreshes the cache and then writes a new `spec.credentialsRevision` (a digest of the
versions the policy reads) into each policy that uses the secret. Envoy Gateway sees a
spec change, re-translates and calls the hook, which now compiles the new password.

Every replica polls (each refreshes its own cache); only the holder of a Lease patches.
A secret that flips several times within one interval is one change (it is polled once),
and a policy that already holds the revision is not patched again.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from backends import CredentialResolver, metrics
from backends.stores import OK, StoreError
from compiler.model import PolicyRef

JITTER = 0.1  # each wait is the interval +- 10 %
log = structlog.get_logger("server.rotation")


class Patcher(Protocol):
    def ensure_revision(self, policy: PolicyRef, revision: str) -> bool: ...


class Elector(Protocol):
    def lead(self) -> bool: ...


@dataclass
class PollReport:
    """What one poll did; for logs and tests."""

    requests: int = 0
    changed: list[Hashable] = field(default_factory=list)
    patched: list[PolicyRef] = field(default_factory=list)
    leader: bool = False


class RotationWatcher:
    def __init__(
        self,
        resolver: CredentialResolver,
        patcher: Patcher,
        elector: Elector,
        interval: float,
    ) -> None:
        self._resolver = resolver
        self._patcher = patcher
        self._elector = elector
        self.interval = interval
        self._versions: dict[Hashable, str] = {}
        # Policies whose revision must be written: kept until the leader has written it, so
        # a failed patch, or a change seen while another replica led, is not lost.
        self._pending: set[PolicyRef] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rotation-watcher", daemon=True)

    def start(self) -> None:
        log.info("rotation.started", interval_seconds=self.interval)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval * random.uniform(1 - JITTER, 1 + JITTER)):  # noqa: S311
            try:
                self.poll_once()
            except Exception:  # a bug or the API server: log it, try again next interval
                log.exception("rotation.poll_failed")

    def poll_once(self) -> PollReport:
        """Ask every secret in use for its version once; act on the ones that changed."""
        report = PollReport()
        documents = self._resolver.registry.documents()
        for document, ref in documents.items():
            store = self._resolver.stores.get(ref.store)
            if store is None:
                continue
            report.requests += 1
            try:
                version = store.version(ref)
            except StoreError as error:
                metrics.BACKEND_REQUESTS.labels(ref.store, error.outcome).inc()
                log.warning("rotation.version_failed", store=ref.store, outcome=error.outcome)
                continue
            metrics.BACKEND_REQUESTS.labels(ref.store, OK).inc()
            # First sight: compare with what the cache holds, which may predate a rotation.
            known = self._versions.get(document) or self._resolver.cached_version(ref)
            self._versions[document] = version
            if known is not None and known != version:
                report.changed.append(document)
        for document in report.changed:
            try:
                self._resolver.refresh(documents[document])
            except StoreError as error:
                log.warning("rotation.refresh_failed", store=error.store, outcome=error.outcome)
        affected = self._resolver.registry.policies_using(report.changed)
        self._pending |= affected
        if self._pending:
            report.leader = self._elector.lead()
        if report.leader:
            for policy in sorted(self._pending):
                if self._patcher.ensure_revision(policy, self.revision(policy)):
                    report.patched.append(policy)
                    log.info("rotation.patched", policy=str(policy))
                self._pending.discard(policy)
        if report.changed:
            log.info(
                "rotation.changed", secrets=len(report.changed), policies=len(affected),
                patched=len(report.patched), leader=report.leader,
            )  # fmt: skip
        return report

    def revision(self, policy: PolicyRef) -> str:
        """A digest of the versions `policy` reads: the same on every replica."""
        lines = sorted(
            f"{document}={self._versions.get(document, '')}"
            for document in self._resolver.registry.documents_of(policy)
        )
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
