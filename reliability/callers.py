"""The soak's callers: threads that call PostHTTPListenerModify back to back and check each answer.

Each caller has its own gRPC channel, as each Envoy Gateway replica would. Requests are
serialized once and answers kept as bytes (no stub (de)serialization): the checker
parses each distinct answer once, so the callers spend their time calling.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

from bench.fixtures import CHANNEL_OPTIONS, hook_request
from reliability.check import Reader, check
from reliability.expect import Timeline
from reliability.scenario import Request

METHOD = "/envoygateway.extension.EnvoyGatewayExtension/PostHTTPListenerModify"
CALL_TIMEOUT = 30.0  # seconds: a gRPC deadline far above any store timeout
SAMPLES_KEPT = 20  # wrong answers and failures described in the report


@dataclass
class Tally:
    """What the calls sent during one phase came to."""

    calls: int = 0
    failed: int = 0
    wrong: int = 0
    admitted: int = 0  # store policies found in answers
    denied: int = 0  # store policies left out of answers
    latencies: array[float] = field(default_factory=lambda: array("d"))
    failures: Counter[str] = field(default_factory=Counter)  # gRPC status -> calls
    reasons: Counter[str] = field(default_factory=Counter)  # what was wrong -> answers


class Load:
    """`count` callers, each cycling through `requests` from its own offset."""

    def __init__(
        self,
        address: str,
        requests: Sequence[Request],
        timeline: Timeline,
        scope: tuple[str, str],
        phases: int,
        count: int = 8,
    ) -> None:
        self.requests = list(requests)
        self._wire = [
            hook_request(r.listener, [p.raw for p in r.policies]).SerializeToString()
            for r in self.requests
        ]
        self.timeline = timeline
        self.scope = scope
        self.phase = 0  # the phase calls are counted in, set by the schedule
        self.phase_started = 0.0
        self.tallies = [Tally() for _ in range(phases)]
        self.samples: list[str] = []  # "phase +seconds request: what" (no secrets)
        self._reader = Reader()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._channels = [
            grpc.insecure_channel(address, options=CHANNEL_OPTIONS) for _ in range(count)
        ]
        for channel in self._channels:
            grpc.channel_ready_future(channel).result(timeout=10)
        self._threads = [
            threading.Thread(target=self._run, args=(c, i), name=f"soak-caller-{i}", daemon=True)
            for i, c in enumerate(self._channels)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=CALL_TIMEOUT + 5)
        for channel in self._channels:
            channel.close()

    def _run(self, channel: grpc.Channel, offset: int) -> None:
        call = channel.unary_unary(METHOD)  # bytes in, bytes out
        index = offset
        clock = time.monotonic
        while not self._stop.is_set():
            which = index % len(self.requests)
            index += 1
            phase, phase_started = self.phase, self.phase_started
            sent = clock()
            try:
                answer = call(self._wire[which], timeout=CALL_TIMEOUT)
            except grpc.RpcError as error:
                self._failed(phase, phase_started, sent, which, error)
                continue
            answered = clock()
            chains = self._reader.chains(answer)
            verdict = check(self.requests[which], chains, self.timeline, sent, answered, self.scope)
            with self._lock:
                tally = self.tallies[phase]
                tally.calls += 1
                tally.latencies.append(answered - sent)
                tally.admitted += verdict.admitted
                tally.denied += verdict.denied
                if verdict.wrong:
                    tally.wrong += 1
                    tally.reasons.update(set(verdict.wrong))
                    self._sample(phase, sent - phase_started, which, "; ".join(verdict.wrong))

    def _failed(
        self, phase: int, phase_started: float, sent: float, which: int, error: grpc.RpcError
    ) -> None:
        code = error.code() if isinstance(error, grpc.Call) else None
        name = code.name if code is not None else type(error).__name__
        details = error.details() if isinstance(error, grpc.Call) else ""
        with self._lock:
            tally = self.tallies[phase]
            tally.calls += 1
            tally.failed += 1
            tally.failures[name] += 1
            self._sample(phase, sent - phase_started, which, f"gRPC {name}: {details}"[:200])

    def _sample(self, phase: int, into: float, which: int, what: str) -> None:
        if len(self.samples) < SAMPLES_KEPT:
            self.samples.append(f"phase {phase} +{into:.1f}s {self.requests[which].label}: {what}")
