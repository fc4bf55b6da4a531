"""The Kubernetes API, for the rotation watcher: list the policies, patch a policy's
revision, hold a Lease.

Uses lightkube, which authenticates as kubectl does: in a cluster with the pod's service
account, outside one from KUBECONFIG (or ~/.kube/config).
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import structlog
from lightkube import ApiError, Client
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from lightkube.types import PatchType

from backends.registry import WatchedPolicy
from compiler.model import POLICY_GROUP, POLICY_KIND, POLICY_VERSION

FIELD_MANAGER = "extension-server"
REVISION_FIELD = "credentialsRevision"
LIST_PAGE = 500  # policies per list request
REQUEST_TIMEOUT = 5.0  # seconds for one request to the API server
ListenerContextExample = create_namespaced_resource(
    POLICY_GROUP, POLICY_VERSION, POLICY_KIND, "listenercontextexamples"
)
log = structlog.get_logger("server.kube")


class PolicyClient:
    """Lists the policies, and writes spec.credentialsRevision (nothing else) into one.

    The patch is made against the resourceVersion the list showed: if the policy changed
    since (another spec, deleted and created again), the API server refuses it (409) and
    the next poll lists it anew. So only a policy exactly as the API server held it is
    ever patched, whatever a hook call claimed about it.
    """

    def __init__(self, client: Client, page: int = LIST_PAGE) -> None:
        self._client = client
        self._page = page

    def listed(self) -> Iterator[dict[str, Any]]:
        """Every ListenerContextExample in every namespace, a page at a time."""
        for obj in self._client.list(ListenerContextExample, namespace="*", chunk_size=self._page):
            yield obj.to_dict()  # type: ignore[no-untyped-call]

    def ensure_revision(self, policy: WatchedPolicy, revision: str) -> bool:
        """Patch the policy unless it holds `revision`; True if it was patched.

        A changed spec makes Envoy Gateway re-translate (it watches spec generations).
        A policy deleted since it was listed is not patched (False).
        """
        if policy.revision == revision:
            return False
        try:
            self._client.patch(
                ListenerContextExample,
                policy.ref.name,
                {
                    "metadata": {"resourceVersion": policy.resource_version},
                    "spec": {REVISION_FIELD: revision},
                },
                namespace=policy.ref.namespace,
                patch_type=PatchType.MERGE,
                field_manager=FIELD_MANAGER,
            )
        except ApiError as error:
            if error.status.code == 404:
                return False  # deleted since it was listed
            raise
        return True


class LeaseElector:
    """The usual leader election on a coordination.k8s.io Lease: one replica patches at a time.

    A Lease held by another replica is judged by when this replica saw it change, on its
    own clock, as client-go's leader election does ("a client observes timestamps
    captured locally", client-go tools/leaderelection): never by the holder's renewTime,
    which a holder whose clock runs ahead would set in the future, blocking every takeover
    for as long. So another replica's Lease runs out one duration after this replica last
    saw it renewed. Optimistic concurrency does the rest: two replicas that try at once
    write against the same resourceVersion, and the API server lets exactly one win.
    """

    def __init__(
        self,
        client: Client,
        namespace: str,
        name: str,
        identity: str,
        duration: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.namespace, self.name, self.identity = namespace, name, identity
        self.duration = max(1, round(duration))
        self._clock = clock
        self._observed: str | None = None  # the resourceVersion last seen
        self._observed_at = 0.0  # when, on this replica's clock
        # lead() and release() one at a time; once released, this replica never leads again.
        self._lock = threading.Lock()
        self._released = False

    def lead(self) -> bool:
        """Take or renew the Lease; whether this replica leads until the next call.

        Called at every poll: the holder renews it, so it runs out only when the holder
        stops (dies, or releases it on shutdown), and another replica takes it then.
        """
        with self._lock:
            if self._released:
                return False
            return self._lead()

    def _lead(self) -> bool:
        now = datetime.datetime.now(datetime.UTC)
        try:
            lease = self._client.get(Lease, self.name, namespace=self.namespace)
        except ApiError as error:
            if error.status.code != 404:
                raise
            return self._create(now)
        self._observe(lease)
        spec = lease.spec or LeaseSpec()
        holder = spec.holderIdentity
        duration = spec.leaseDurationSeconds or self.duration
        if holder and holder != self.identity and self._clock() < self._observed_at + duration:
            return False
        if holder != self.identity:
            spec.acquireTime = now
            spec.leaseTransitions = (spec.leaseTransitions or 0) + 1
            log.info("rotation.leader", lease=self.name, identity=self.identity)
        spec.holderIdentity = self.identity
        spec.leaseDurationSeconds = self.duration
        spec.renewTime = now
        lease.spec = spec
        try:
            self._observe(self._client.replace(lease))
        except ApiError as error:
            if error.status.code == 409:
                return False  # another replica renewed or took it first
            raise
        return True

    def _observe(self, lease: Lease) -> None:
        version = lease.metadata.resourceVersion if lease.metadata else None
        if version != self._observed:
            self._observed, self._observed_at = version, self._clock()

    def release(self, timeout: float = REQUEST_TIMEOUT) -> None:
        """Give the Lease up (a clean shutdown), so another replica takes it at its next poll.

        As client-go's leader election releases it: the holder emptied, the duration one
        second. Only a Lease this replica holds; losing a race to another is no error.
        After this, `lead` never takes it again. Waits at most `timeout` for a `lead`
        in flight; raises TimeoutError if that is still running.
        """
        if not self._lock.acquire(timeout=max(timeout, 0.0)):
            self._released = True  # the lead() in flight is the last one
            raise TimeoutError("the Lease was still being renewed")
        try:
            self._released = True
            self._release()
        finally:
            self._lock.release()

    def _release(self) -> None:
        try:
            lease = self._client.get(Lease, self.name, namespace=self.namespace)
        except ApiError as error:
            if error.status.code == 404:
                return
            raise
        spec = lease.spec or LeaseSpec()
        if spec.holderIdentity != self.identity:
            return
        now = datetime.datetime.now(datetime.UTC)
        spec.holderIdentity = ""
        spec.leaseDurationSeconds = 1
        spec.acquireTime = spec.renewTime = now
        lease.spec = spec
        try:
            self._client.replace(lease)
        except ApiError as error:
            if error.status.code == 409:
                return  # changed meanwhile: not ours to release any more
            raise
        log.info("rotation.released", lease=self.name, identity=self.identity)

    def _create(self, now: datetime.datetime) -> bool:
        lease = Lease(
            metadata=ObjectMeta(name=self.name, namespace=self.namespace),
            spec=LeaseSpec(
                holderIdentity=self.identity,
                leaseDurationSeconds=self.duration,
                acquireTime=now,
                renewTime=now,
                leaseTransitions=0,
            ),
        )
        try:
            self._observe(self._client.create(lease))
        except ApiError as error:
            if error.status.code == 409:
                return False
            raise
        log.info("rotation.leader", lease=self.name, identity=self.identity)
        return True
