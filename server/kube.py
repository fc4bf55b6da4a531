"""The Kubernetes API, for the rotation watcher: patch a policy's revision, hold a Lease.

Uses lightkube, which authenticates as kubectl does: in a cluster with the pod's service
account, outside one from KUBECONFIG (or ~/.kube/config).
"""

from __future__ import annotations

import datetime
from typing import Any

import structlog
from lightkube import ApiError, Client
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from lightkube.types import PatchType

from compiler.model import POLICY_GROUP, POLICY_KIND, POLICY_VERSION, PolicyRef

FIELD_MANAGER = "extension-server"
REVISION_FIELD = "credentialsRevision"
ListenerContextExample = create_namespaced_resource(
    POLICY_GROUP, POLICY_VERSION, POLICY_KIND, "listenercontextexamples"
)
log = structlog.get_logger("server.kube")


class PolicyPatcher:
    """Writes spec.credentialsRevision, and nothing else, with a merge patch."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def ensure_revision(self, policy: PolicyRef, revision: str) -> bool:
        """Patch the policy unless it already holds `revision`; True if it was patched.

        A changed spec makes Envoy Gateway re-translate (it watches spec generations).
        """
        try:
            current = self._client.get(
                ListenerContextExample, policy.name, namespace=policy.namespace
            )
        except ApiError as error:
            if error.status.code == 404:
                return False  # deleted since its last hook call
            raise
        spec: Any = getattr(current, "spec", None) or {}
        if spec.get(REVISION_FIELD) == revision:
            return False
        self._client.patch(
            ListenerContextExample,
            policy.name,
            {"spec": {REVISION_FIELD: revision}},
            namespace=policy.namespace,
            patch_type=PatchType.MERGE,
            field_manager=FIELD_MANAGER,
        )
        return True


class LeaseElector:
    """The usual leader election on a coordination.k8s.io Lease: one replica patches at a time.

    Optimistic concurrency does the rest: two replicas that try at once write against the
    same resourceVersion, and the API server lets exactly one of them win.
    """

    def __init__(
        self, client: Client, namespace: str, name: str, identity: str, duration: float
    ) -> None:
        self._client = client
        self.namespace, self.name, self.identity = namespace, name, identity
        self.duration = max(1, round(duration))

    def lead(self) -> bool:
        """Take or renew the Lease; whether this replica leads until the next call.

        Called at every poll: the holder renews it, so it runs out only when the holder
        stops (dies, or releases it on shutdown), and another replica takes it then.
        """
        now = datetime.datetime.now(datetime.UTC)
        try:
            lease = self._client.get(Lease, self.name, namespace=self.namespace)
        except ApiError as error:
            if error.status.code != 404:
                raise
            return self._create(now)
        spec = lease.spec or LeaseSpec()
        holder = spec.holderIdentity
        renewed = spec.renewTime or spec.acquireTime
        expires = (
            renewed + datetime.timedelta(seconds=spec.leaseDurationSeconds or self.duration)
            if renewed
            else now
        )
        if holder and holder != self.identity and expires > now:
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
            self._client.replace(lease)
        except ApiError as error:
            if error.status.code == 409:
                return False  # another replica renewed or took it first
            raise
        return True

    def release(self) -> None:
        """Give the Lease up (a clean shutdown), so another replica takes it at its next poll.

        As client-go's leader election releases it: the holder emptied, the duration one
        second. Only a Lease this replica holds; losing a race to another is no error.
        """
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
            self._client.create(lease)
        except ApiError as error:
            if error.status.code == 409:
                return False
            raise
        log.info("rotation.leader", lease=self.name, identity=self.identity)
        return True
