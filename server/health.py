"""The gRPC health service (grpc.health.v1.Health), whose status changes never wait on a client.

grpcio-health-checking's servicer writes each status change into every Watch stream while
it holds its own lock, and waits for each write to complete. A write completes on the gRPC
server's event thread, which also runs the callback of a stream that ends, and that
callback needs the same lock: a Watch stream ending while the status changes (SIGTERM's
NOT_SERVING) blocks both for good, and with them the shutdown. A client that stops reading
blocks the write as well.

Here a status change only records the new status and queues the streams that watch it; one
thread of its own writes to them, holding no lock, newest status only. Whatever Watch
clients do (open, cancel, stop reading), `set`, `enter_graceful_shutdown` and `end_watches`
return at once and `Check` answers. `end_watches` ends every stream (after its last
status), so that the gRPC server's own graceful stop need not wait for them; stopping it
cancels any stream left, which ends a write still waiting on a client.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICE_NAME = "grpc.health.v1.Health"
OVERALL = ""  # the server as a whole
MAX_WATCHES = 100  # Watch streams open at once; more get RESOURCE_EXHAUSTED
Status = int  # a health_pb2.HealthCheckResponse.ServingStatus


class _Stream:
    """One Watch stream: the newest status to write, written by the sender thread only."""

    def __init__(self, service: str, send: Callable[[Any], None]) -> None:
        self.service = service
        self.send = send
        self.lock = threading.Lock()
        self.latest: Status | None = None  # not written yet
        self.queued = False
        self.ending = False  # end the stream once the latest status is written
        self.closed = False


class HealthService(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """Check, List and Watch; `set` and `enter_graceful_shutdown` never block."""

    def __init__(self, max_watches: int = MAX_WATCHES) -> None:
        self._lock = threading.Lock()  # never held while writing to a stream
        self._status: dict[str, Status] = {OVERALL: health_pb2.HealthCheckResponse.SERVING}
        self._streams: set[_Stream] = set()
        self._shutting_down = False
        self._ending = False
        self._max_watches = max_watches
        self._to_send: queue.SimpleQueue[_Stream] = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send_forever, name="health-watch", daemon=True)
        self._sender.start()

    # -- the service ------------------------------------------------------------------------

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            status = self._status.get(request.service)
        if status is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return health_pb2.HealthCheckResponse(status=status)

    def List(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            statuses = dict(self._status)
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in statuses.items()
            }
        )

    def Watch(
        self,
        request: Any,
        context: grpc.ServicerContext,
        send_response_callback: Callable[[Any], None] | None = None,
    ) -> None:
        assert send_response_callback is not None  # experimental_non_blocking is set
        stream = _Stream(request.service, send_response_callback)
        unknown = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        with self._lock:
            full = len(self._streams) >= self._max_watches
            if not full:
                self._streams.add(stream)
            status = self._status.get(request.service, unknown)
            stream.ending = self._ending  # the server is stopping: one answer, then the end
        if full:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many health Watch streams")
        if not context.add_callback(lambda: self._ended(stream)):
            self._ended(stream)  # ended already
            return
        self._offer(stream, status)

    # Watch answers through a callback instead of holding one of gRPC's threads per stream.
    Watch.experimental_non_blocking = True  # type: ignore[attr-defined]

    # -- status changes ---------------------------------------------------------------------

    def set(self, service: str, status: Status) -> None:
        """Record `service`'s status and queue it for its watchers; ignored once shutting down."""
        with self._lock:
            if self._shutting_down:
                return
            self._status[service] = status
            watching = [stream for stream in self._streams if stream.service == service]
        for stream in watching:
            self._offer(stream, status)

    def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING for good; returns at once, whatever the watchers do."""
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        with self._lock:
            if self._shutting_down:
                return
            for service in self._status:
                self._status[service] = not_serving
            self._shutting_down = True
            watching = [s for s in self._streams if s.service in self._status]
        for stream in watching:
            self._offer(stream, not_serving)

    def end_watches(self) -> None:
        """End every Watch stream after its latest status, and each new one after its
        first answer (the server is stopping); returns at once."""
        with self._lock:
            self._ending = True
            streams = list(self._streams)
        for stream in streams:
            with stream.lock:
                stream.ending = True
                if stream.queued or stream.closed:
                    continue
                stream.queued = True
            self._to_send.put(stream)

    @property
    def watches(self) -> int:
        """Watch streams open now."""
        with self._lock:
            return len(self._streams)

    # -- writing ----------------------------------------------------------------------------

    def _offer(self, stream: _Stream, status: Status) -> None:
        with stream.lock:
            if stream.closed:
                return
            stream.latest = status
            if stream.queued:
                return  # the sender will write the newest status
            stream.queued = True
        self._to_send.put(stream)

    def _ended(self, stream: _Stream) -> None:
        """The stream's end, on gRPC's event thread: must never wait for anything slow."""
        with stream.lock:
            stream.closed = True
        with self._lock:
            self._streams.discard(stream)

    def _send_forever(self) -> None:
        while True:
            stream = self._to_send.get()
            with stream.lock:
                status, stream.latest, stream.queued = stream.latest, None, False
                if stream.closed:
                    continue
                end = stream.ending
            try:
                if status is not None:
                    stream.send(health_pb2.HealthCheckResponse(status=status))
                if end:
                    stream.send(None)  # the stream's end (status OK): the client may retry
            except Exception:  # noqa: S112 (a stream that ended meanwhile: nothing to tell it)
                continue


def add_to_server(service: HealthService, server: grpc.Server) -> None:
    health_pb2_grpc.add_HealthServicer_to_server(service, server)
