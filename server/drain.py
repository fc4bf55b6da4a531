"""Graceful shutdown that does not cut answers off.

grpc's own `stop(grace)` closes every connection as soon as the handlers have returned,
and an answer still queued behind HTTP/2 flow control (a large listener to a slow
client) is lost: the client sees UNAVAILABLE for a call the server completed. So the
server drains first: new calls are refused with UNAVAILABLE (Envoy Gateway retries those,
reaching another replica), and shutdown waits until gRPC reports every call in flight
terminated, that is, its status sent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc

HEALTH_PREFIX = "/grpc.health.v1.Health/"


class Drain(grpc.ServerInterceptor):  # type: ignore[misc]
    """Counts unary calls from arrival to termination; refuses new ones once draining."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._draining = False
        self._idle = threading.Event()  # set once draining and no call is left
        self._wrapped: dict[str, Any] = {}

    @property
    def active(self) -> int:
        with self._lock:
            return self._active

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped  # built once per method, not once per call
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # streams (health Watch, reflection) never hold a shutdown up
        if method.startswith(HEALTH_PREFIX):
            return handler  # probes keep getting answers: NOT_SERVING while draining
        wrapped = self._track(handler)
        self._wrapped[method] = wrapped
        return wrapped

    def _track(self, handler: Any) -> Any:
        behaviour = handler.unary_unary

        def tracked(request: Any, context: grpc.ServicerContext) -> Any:
            with self._lock:
                if self._draining:
                    context.abort(grpc.StatusCode.UNAVAILABLE, "server is shutting down")
                self._active += 1
            if not context.add_callback(self._finished):
                self._finished()
            return behaviour(request, context)

        return grpc.unary_unary_rpc_method_handler(
            tracked,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _finished(self) -> None:
        with self._lock:
            self._active -= 1
            if self._draining and self._active == 0:
                self._idle.set()

    def drain(self, timeout: float) -> bool:
        """Refuse new calls and wait for the ones in flight; False if the time ran out."""
        with self._lock:
            self._draining = True
            if self._active == 0:
                self._idle.set()
        return self._idle.wait(timeout)
