"""One extension server in this process, its hook called over real gRPC, and what it logged.

For stories of the form "given these policies and these stored values, the call answers OK,
these users get in, these policies are reported for this reason": `HookServer.call` sends one
PostHTTPListenerModify with a listener named for the story, and returns the answer with the
log events the server wrote about that listener. `listener_request` builds such a request for
tests that call a server of their own; tests/support/compile.py reads the answers.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc

from server.api import extension_pb2 as api
from server.api import extension_pb2_grpc as api_grpc
from server.app import ExtensionServer, ServerSettings
from tests.support.builders import http_listener
from tests.support.compile import admitted, tables

Listener = Any  # envoy.config.listener.v3.Listener


class LogEvents(logging.Handler):
    """The server's structured log events (structlog hands logging the event dict)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.by_listener: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.all: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        event = record.msg
        if isinstance(event, dict):
            self.all.append(dict(event))
            if "listener" in event:
                self.by_listener[str(event["listener"])].append(dict(event))


@dataclass
class Answered:
    """One call's outcome: the status, the listener answered, and the log lines about it."""

    code: grpc.StatusCode
    listener: Listener | None
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tables(self) -> list[dict[str, str]]:
        """The users (name -> hash) of each HTTP connection manager, read as Envoy reads them."""
        assert self.listener is not None
        return tables(self.listener)

    @property
    def admitted(self) -> set[str]:
        """Users every HTTP connection manager admits (asserts each has our filter)."""
        assert self.listener is not None
        return admitted(self.listener)

    def named(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.events if line.get("event") == event]

    @property
    def rejected(self) -> dict[str, str]:
        """policy -> reason, for policies left out whole and for policies with entries left out."""
        found = {line["policy"]: line["reason"] for line in self.named("policy.rejected")}
        for line in self.named("policy.entries_rejected"):
            found[line["policy"]] = line["reasons"]
        return found


def listener_request(
    *resources: bytes, listener: Listener | None = None
) -> api.PostHTTPListenerModifyRequest:
    """PostHTTPListenerModify as Envoy Gateway sends it: a listener (plain HTTP by default)
    and the extension resources attached to it."""
    return api.PostHTTPListenerModifyRequest(
        listener=http_listener() if listener is None else listener,
        post_listener_context=api.PostHTTPListenerExtensionContext(
            extension_resources=[api.ExtensionResource(unstructured_bytes=r) for r in resources]
        ),
    )


class HookServer:
    """A running in-process server and a channel to it."""

    def __init__(self, server: ExtensionServer, events: LogEvents) -> None:
        self.server, self.events = server, events
        self._channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        self.stub = api_grpc.EnvoyGatewayExtensionStub(self._channel)

    def call(
        self, story: str, *resources: bytes, listener: Listener | None = None, timeout: float = 30
    ) -> Answered:
        sent = listener if listener is not None else http_listener()
        sent.name = story  # the log lines about this call name it
        request = listener_request(*resources, listener=sent)
        try:
            answer = self.stub.PostHTTPListenerModify(request, timeout=timeout)
        except grpc.RpcError as error:
            return Answered(error.code(), None, self.events.by_listener.get(story, []))
        return Answered(grpc.StatusCode.OK, answer.listener, self.events.by_listener.get(story, []))

    def close(self) -> None:
        self._channel.close()
        self.server.stop()


@contextmanager
def hook_server(settings: ServerSettings) -> Iterator[HookServer]:
    """Start a server with `settings` (host and port are set here) and capture its events."""
    events = LogEvents()
    logging.getLogger().addHandler(events)
    server = ExtensionServer(
        ServerSettings(**{**vars(settings), "host": "127.0.0.1", "port": 0, "shutdown_grace": 1.0})
    )
    server.start()
    running = HookServer(server, events)
    try:
        yield running
    finally:
        running.close()
        logging.getLogger().removeHandler(events)
