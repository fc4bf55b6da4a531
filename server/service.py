"""The EnvoyGatewayExtension gRPC service.

PostHTTPListenerModify runs the compiler; every other hook hands its input back
unchanged (it is never UNIMPLEMENTED, so enabling more hooks in Envoy Gateway is safe).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import grpc
from prometheus_client import Histogram

from compiler.model import CompileOptions, PolicyRef
from compiler.pipeline import Resolver, compile_listener, load_policies
from server import logs
from server.api import extension_pb2 as api
from server.api import extension_pb2_grpc as api_grpc
from server.logs import get_logger

log = get_logger("server.service")
HOOK_LATENCY = Histogram(
    "extension_server_hook_duration_seconds",
    "Time to answer a hook call, by method.",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LISTENER_LATENCY = HOOK_LATENCY.labels("PostHTTPListenerModify")
LOGGED_POLICIES = 20  # a listener can carry thousands: name the first ones, count the rest


def summarize(refs: Sequence[PolicyRef]) -> str:
    """`ns/a,ns/b,...(+N more)`: bounded, so one log line stays readable."""
    shown = ",".join(str(ref) for ref in refs[:LOGGED_POLICIES]) or "-"
    hidden = len(refs) - LOGGED_POLICIES
    return f"{shown},...(+{hidden} more)" if hidden > 0 else shown


class ExtensionService(api_grpc.EnvoyGatewayExtensionServicer):
    def __init__(self, resolve: Resolver, options: CompileOptions) -> None:
        self._resolve = resolve
        self._options = options

    def PostHTTPListenerModify(
        self, request: api.PostHTTPListenerModifyRequest, context: grpc.ServicerContext
    ) -> api.PostHTTPListenerModifyResponse:
        if not request.HasField("listener"):
            return api.PostHTTPListenerModifyResponse()  # nothing sent, nothing changed
        started = time.perf_counter()
        name = request.listener.name
        raw = [r.unstructured_bytes for r in request.post_listener_context.extension_resources]
        try:
            policies = load_policies(raw, self._resolve)
            result = compile_listener(request.listener, policies, self._options)
        except Exception:
            # A bug, not a bad policy. Failing the call keeps Envoy Gateway's last good
            # config in place (fail closed) instead of sending an unprotected listener.
            log.exception("hook.failed", listener=name)
            context.abort(grpc.StatusCode.INTERNAL, f"extension server failed on listener {name}")
            raise  # pragma: no cover (abort raises)
        for chain in result.report.undecodable:
            log.error("listener.undecodable_manager", listener=name, filter_chain=chain)
        for ignored in policies.ignored:
            log.info(
                "policy.ignored",
                listener=name,
                kind=ignored.kind,
                api_version=ignored.api_version,
                resource=str(ignored.ref),
            )
        for error in result.errors:
            log.warning(
                "policy.rejected",
                listener=name,
                policy=str(error.policy),
                field=error.field,
                error=str(error),
                reason=type(error).__name__,
            )
        elapsed = time.perf_counter() - started
        LISTENER_LATENCY.observe(elapsed)
        if logs.enabled(logging.INFO):  # the line is built only when someone reads it
            log.info(
                "hook.listener",
                listener=name,
                policies=summarize(policies.refs),
                policy_count=len(policies.refs),
                users=result.users,
                rejected=len(result.errors),
                managers_protected=result.report.managers_protected,
                managers_unchanged=result.report.managers_skipped,
                ms=round(elapsed * 1000, 2),
            )
        return api.PostHTTPListenerModifyResponse(listener=result.listener)

    def PostRouteModify(
        self, request: api.PostRouteModifyRequest, context: grpc.ServicerContext
    ) -> api.PostRouteModifyResponse:
        return api.PostRouteModifyResponse(route=request.route)

    def PostVirtualHostModify(
        self, request: api.PostVirtualHostModifyRequest, context: grpc.ServicerContext
    ) -> api.PostVirtualHostModifyResponse:
        return api.PostVirtualHostModifyResponse(virtual_host=request.virtual_host)

    def PostClusterModify(
        self, request: api.PostClusterModifyRequest, context: grpc.ServicerContext
    ) -> api.PostClusterModifyResponse:
        return api.PostClusterModifyResponse(cluster=request.cluster)

    def PostEndpointsModify(
        self, request: api.PostEndpointsModifyRequest, context: grpc.ServicerContext
    ) -> api.PostEndpointsModifyResponse:
        return api.PostEndpointsModifyResponse(load_assignment=request.load_assignment)

    def PostTranslateModify(
        self, request: api.PostTranslateModifyRequest, context: grpc.ServicerContext
    ) -> api.PostTranslateModifyResponse:
        # The response replaces Envoy Gateway's lists whole: hand every resource back.
        return api.PostTranslateModifyResponse(
            clusters=request.clusters,
            secrets=request.secrets,
            listeners=request.listeners,
            routes=request.routes,
        )
