"""The EnvoyGatewayExtension gRPC service.

PostHTTPListenerModify runs the compiler; every other hook hands its input back
unchanged (it is never UNIMPLEMENTED, so enabling more hooks in Envoy Gateway is safe).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import partial

import grpc
from google.protobuf.message import DecodeError, Message
from prometheus_client import Counter, Histogram

from compiler.model import CompileOptions
from compiler.pipeline import ListenerCompiler, ListenerResult, PolicySet, Resolver
from server import logs
from server.answers import Answer, Answers
from server.api import extension_pb2 as api
from server.api import extension_pb2_grpc as api_grpc
from server.logs import get_logger
from server.outcomes import ListenerOutcome, Observers
from server.report import (
    REPEAT_INTERVAL,
    LogEvent,
    Rejections,
    RepeatFilter,
    answer_events,
    listener_outcome,
    rejections,
    summarize,
    virtual_host_outcome,
)

log = get_logger("server.service")
HOOK_LATENCY = Histogram(
    "extension_server_hook_duration_seconds",
    "Time to answer a hook call, by method.",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
METHOD = "PostHTTPListenerModify"
TRANSLATE = "PostTranslateModify"
LISTENER_LATENCY = HOOK_LATENCY.labels(METHOD)
TRANSLATION_LATENCY = HOOK_LATENCY.labels(TRANSLATE)
HOOK_ERRORS = Counter(
    "extension_server_hook_errors",
    "Hook calls answered with an error status, by method and gRPC code. Each one makes Envoy "
    "Gateway (failOpen: false) keep its last configuration for every Gateway.",
    ["method", "code"],
)
# A response is its listener behind one tag byte and a length of at most 5 bytes.
RESPONSE_FRAMING = 6


@dataclass(frozen=True)
class CallLimits:
    """What one call may take, so that no caller can starve the others."""

    max_message_size: int = 4 * 1024 * 1024  # bytes each way; Envoy Gateway's default (4M)
    max_concurrent_calls: int | None = 64  # beyond: RESOURCE_EXHAUSTED; None: no limit
    call_timeout: float = 10.0  # seconds until DEADLINE_EXCEEDED; 0: no deadline of ours


class Refused(Exception):
    """A call answered with an error status instead of a listener."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class ExtensionService(api_grpc.EnvoyGatewayExtensionServicer):
    def __init__(
        self,
        resolve: Resolver,
        options: CompileOptions,
        limits: CallLimits | None = None,
        workers: int = 16,
        repeat_interval: float = REPEAT_INTERVAL,
        observers: Observers | None = None,
    ) -> None:
        self._compiler = ListenerCompiler(resolve, options)
        self._limits = limits or CallLimits()
        self._answers = Answers()
        self._repeats = RepeatFilter(repeat_interval)
        # Kubernetes Events and the audit trail hear of every answer compiled anew.
        self._observers = observers or Observers()
        # New answers are compiled here, so that a call can give up at its deadline while
        # the compile goes on and is kept for the next call (which Envoy Gateway makes at
        # its next translation).
        self._compiling = ThreadPoolExecutor(workers, thread_name_prefix="compile")

    def close(self) -> None:
        self._compiling.shutdown(wait=False, cancel_futures=True)

    def answer(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        """PostHTTPListenerModify on the wire's bytes: a repeated request costs a lookup.

        Nothing about one policy can fail the call (the pipeline turns every such failure
        into that policy's error, and leaves out policies the message cannot hold). What
        answers an error status is about the call itself, each named in docs/design.md:
        a request that is not a PostHTTPListenerModifyRequest, a listener too large to
        answer even without any user, a compile past the call deadline, and bugs.
        """
        started = time.perf_counter()
        try:
            kept, policies = self._answers.find(request), None
            if kept is not None and not kept.settled:
                policies = self._compiler.resolve(kept.parsed)
                if not kept.still_holds(policies):
                    kept = None
            reused = kept is not None
            if kept is None:
                kept = self._compile_in_time(request, policies, started, context)
            self._report(kept.events, kept.rejections)
            self._check_size(kept)
        except Refused as refused:
            HOOK_ERRORS.labels(METHOD, refused.code.name).inc()
            context.abort(refused.code, refused.details)
            raise  # pragma: no cover (abort raises)
        except Exception:
            log.exception("hook.failed", size=len(request))  # a bug: fail closed, as below
            HOOK_ERRORS.labels(METHOD, grpc.StatusCode.INTERNAL.name).inc()
            context.abort(grpc.StatusCode.INTERNAL, "extension server failed")
            raise  # pragma: no cover (abort raises)
        if not kept.summary:
            return kept.response  # no listener: nothing to measure or report
        elapsed = time.perf_counter() - started
        LISTENER_LATENCY.observe(elapsed)
        # An answer compiled anew is news (info); the same answer again, at every
        # translation, is not (debug). The line is built only when someone reads it.
        level = logging.DEBUG if reused else logging.INFO
        if logs.enabled(level):
            summary = dict(kept.summary, reused=reused, ms=round(elapsed * 1000, 2))
            log.log(level, "hook.listener", **summary)
        return kept.response

    def _report(self, events: Sequence[LogEvent], counted: Rejections) -> None:
        """An answer's lines (each once per interval) and its rejection counts (always)."""
        for line in events:
            if self._repeats.allow(line.key):
                getattr(log, line.level)(line.event, **dict(line.fields))
        counted.count()

    def _compile_in_time(
        self,
        request: bytes,
        policies: PolicySet | None,
        started: float,
        context: grpc.ServicerContext,
    ) -> Answer:
        limit = self._limits.call_timeout
        if limit <= 0:
            return self._compile_and_keep(request, policies)
        compiling = self._compiling.submit(self._compile_and_keep, request, policies)
        left = limit - (time.perf_counter() - started)
        client = context.time_remaining()  # the caller's own deadline, if it set one
        try:
            return compiling.result(max(0.0, left if client is None else min(left, client)))
        except FutureTimeout:
            # Not started yet (every compile thread busy, say with a slow store): drop it
            # rather than queue work nobody waits for.
            compiling.cancel()
            log.warning("hook.deadline_exceeded", size=len(request), call_timeout=limit)
            raise Refused(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the answer took longer than the call timeout ({limit:g}s); it is kept "
                "for the next call when it completes",
            ) from None

    def _compile_and_keep(self, request: bytes, policies: PolicySet | None) -> Answer:
        answer = self._compile(request, policies)
        self._answers.keep(request, answer)
        return answer

    def _check_size(self, answer: Answer) -> None:
        """Only a listener too large with no user at all can still be over the limit."""
        if len(answer.response) > self._limits.max_message_size:
            name = str(dict(answer.summary).get("listener", ""))
            raise self._too_large(name, f"the answer for listener {name}", len(answer.response))

    def _too_large(self, listener: str, what: str, size: int) -> Refused:
        """Logged, and the refusal to answer: `what` is `size` bytes with no user in it."""
        limit = self._limits.max_message_size
        log.error("hook.answer_too_large", listener=listener, size=size, limit=limit)
        return Refused(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"{what} is {size} bytes without any user, over the {limit}-byte message limit: "
            "raise --max-message-size here and maxMessageSize in Envoy Gateway's extension "
            "settings",
        )

    def _compile(self, raw: bytes, policies: PolicySet | None) -> Answer:
        try:
            request = api.PostHTTPListenerModifyRequest.FromString(raw)
        except DecodeError:
            log.warning("hook.invalid_request", size=len(raw))  # never its content
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the request is not a PostHTTPListenerModifyRequest",
            ) from None
        sent = request.post_listener_context.extension_resources
        resources = [resource.unstructured_bytes for resource in sent]
        name = request.listener.name
        try:
            parsed = self._compiler.parse(resources)
            if not request.HasField("listener"):  # nothing sent, nothing changed
                return Answer(parsed, (), b"", (), ())
            if policies is None:  # else: resolved by the lookup, from these very bytes
                policies = self._compiler.resolve(parsed)
            max_bytes = self._limits.max_message_size - RESPONSE_FRAMING
            result = self._compiler.compile(request.listener, policies, max_bytes)
        except Exception:
            # A bug, not a bad policy (every policy's failure is its own error). Failing the
            # call keeps Envoy Gateway's last good config in place (fail closed) instead of
            # sending an unprotected listener.
            log.exception("hook.failed", listener=name)
            raise Refused(
                grpc.StatusCode.INTERNAL, f"extension server failed on listener {name}"
            ) from None
        response = api.PostHTTPListenerModifyResponse(listener=result.listener)
        if self._observers:
            self._tell_observers(name, result)
        counted = rejections(result)
        return Answer(
            parsed,
            policies.keys,
            response.SerializeToString(),
            answer_events(name, result),
            (
                ("listener", name),
                ("policies", summarize(result.policies.refs)),
                ("policy_count", len(result.policies.refs)),
                ("users", result.users),
                ("rejected_policies", sum(n for _, n in counted.policies)),
                ("rejected_entries", sum(n for _, n in counted.entries)),
                ("managers_protected", result.report.managers_protected),
                ("managers_unchanged", result.report.managers_skipped),
            ),
            counted,
        )

    def _tell_observers(self, listener: str, result: ListenerResult) -> None:
        self._observe(listener, lambda: listener_outcome(listener, result))

    def _observe(self, listener: str, outcome: Callable[[], ListenerOutcome]) -> None:
        """Hand an outcome to Kubernetes Events and the audit trail (they queue it and
        return at once); whatever goes wrong here is logged, never the call's."""
        try:
            made = outcome()
        except Exception:
            log.exception("observer.outcome_failed", listener=listener)
            return
        self._observers.observe(made)

    def PostRouteModify(
        self, request: api.PostRouteModifyRequest, context: grpc.ServicerContext
    ) -> api.PostRouteModifyResponse:
        return api.PostRouteModifyResponse(**_sent(request, "route"))

    def PostVirtualHostModify(
        self, request: api.PostVirtualHostModifyRequest, context: grpc.ServicerContext
    ) -> api.PostVirtualHostModifyResponse:
        return api.PostVirtualHostModifyResponse(**_sent(request, "virtual_host"))

    def PostClusterModify(
        self, request: api.PostClusterModifyRequest, context: grpc.ServicerContext
    ) -> api.PostClusterModifyResponse:
        return api.PostClusterModifyResponse(**_sent(request, "cluster"))

    def PostEndpointsModify(
        self, request: api.PostEndpointsModifyRequest, context: grpc.ServicerContext
    ) -> api.PostEndpointsModifyResponse:
        return api.PostEndpointsModifyResponse(**_sent(request, "load_assignment"))

    def PostTranslateModify(
        self, request: api.PostTranslateModifyRequest, context: grpc.ServicerContext
    ) -> api.PostTranslateModifyResponse:
        """The Translation hook: every listener protected as PostHTTPListenerModify does,
        every virtual host holding its own Gateway's users (compiler/translation.py).

        The response replaces Envoy Gateway's lists whole: every resource comes back, in
        order. As for the listener hook, only a bug, or a translation too large without
        any user, answers an error status.
        """
        started = time.perf_counter()
        try:
            response = self._translate(request)
        except Refused as refused:
            HOOK_ERRORS.labels(TRANSLATE, refused.code.name).inc()
            context.abort(refused.code, refused.details)
            raise  # pragma: no cover (abort raises)
        except Exception:
            log.exception("hook.failed", method=TRANSLATE)  # a bug: fail closed
            HOOK_ERRORS.labels(TRANSLATE, grpc.StatusCode.INTERNAL.name).inc()
            context.abort(grpc.StatusCode.INTERNAL, "extension server failed on the translation")
            raise  # pragma: no cover (abort raises)
        TRANSLATION_LATENCY.observe(time.perf_counter() - started)
        return response

    def _translate(
        self, request: api.PostTranslateModifyRequest
    ) -> api.PostTranslateModifyResponse:
        sent = request.post_translate_context.extension_resources
        policies = self._compiler.resolve(
            self._compiler.parse([resource.unstructured_bytes for resource in sent])
        )
        limit = self._limits.max_message_size
        kept = sum(_framed(item) for item in (*request.clusters, *request.secrets))
        result = self._compiler.translate(
            request.listeners, request.routes, policies, limit - kept - _slack(request)
        )
        response = api.PostTranslateModifyResponse(
            clusters=request.clusters,
            secrets=request.secrets,
            listeners=[item.listener for item in result.listeners],
            routes=result.routes,
        )
        size = int(response.ByteSize())
        if size > limit:
            raise self._too_large("-", "the translation's answer", size)
        for item in result.listeners:
            self._report(answer_events(item.listener.name, item), rejections(item))
            if self._observers:
                self._tell_observers(item.listener.name, item)
        if self._observers:
            for name in dict.fromkeys(route.name for route in result.routes):
                hosts = [host for host in result.hosts if host.routes == name]
                self._observe(name, partial(virtual_host_outcome, name, hosts, result.policies))
        seen = (
            TRANSLATE,
            tuple(item.listener.name for item in result.listeners),
            tuple(route.name for route in result.routes),
            result.policies.keys,
        )
        log.log(
            logging.INFO if self._repeats.allow(seen) else logging.DEBUG,
            "hook.translation",
            listeners=len(result.listeners),
            routes=len(result.routes),
            virtual_hosts=sum(len(route.virtual_hosts) for route in result.routes),
            policies=summarize(result.policies.refs),
            policy_count=len(result.policies.refs),
        )
        return response


def _framed(message: Message) -> int:
    """A repeated message field's bytes in the answer: its own, a tag and a length."""
    return int(message.ByteSize()) + RESPONSE_FRAMING


def _slack(request: api.PostTranslateModifyRequest) -> int:
    """The framing of the listeners and routes of the answer."""
    return RESPONSE_FRAMING * (len(request.listeners) + len(request.routes))


def _sent(request: Message, field: str) -> dict[str, Message]:
    """`field` of `request` as a keyword argument, or nothing when the caller left it unset.

    Passing an unset message field on would set it (to an empty message) in the answer,
    and Envoy Gateway reads an unset field as "no change" but an empty one as a resource
    to replace the original with.
    """
    return {field: getattr(request, field)} if request.HasField(field) else {}


def add_to_server(service: ExtensionService, server: grpc.Server) -> None:
    """Register every hook; PostHTTPListenerModify takes and returns the wire's bytes."""
    handlers = {
        "PostHTTPListenerModify": grpc.unary_unary_rpc_method_handler(service.answer),
        **{
            method: grpc.unary_unary_rpc_method_handler(
                getattr(service, method),
                request_deserializer=getattr(api, f"{method}Request").FromString,
                response_serializer=getattr(api, f"{method}Response").SerializeToString,
            )
            for method in TYPED_HOOKS
        },
    }
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


SERVICE_NAME = api.DESCRIPTOR.services_by_name["EnvoyGatewayExtension"].full_name
# The hooks protobuf decodes for us: PostTranslateModify, and the pass-throughs.
TYPED_HOOKS = (
    "PostTranslateModify",
    "PostRouteModify",
    "PostVirtualHostModify",
    "PostClusterModify",
    "PostEndpointsModify",
)
