"""Whole answers to PostHTTPListenerModify, kept by the bytes of the request they answer.

Envoy Gateway sends the same listener with the same policies on every translation. A
request seen before is answered with the bytes sent last time, without decoding the
request or encoding a response, while its policies still resolve to the same value keys
(the same policies over the same secret versions): a rotated or expired secret resolves
to another key, and the call is compiled again. `Answers` only keeps and finds; the
service resolves and compares. What the first answer logged is offered to the log again,
which lets each line through once per interval (server/report.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from compiler.memo import BoundedMemo
from compiler.model import PLAIN, ValueKey
from compiler.pipeline import ParsedPolicies, PolicySet
from server.report import NO_REJECTIONS, LogEvent, Rejections

ANSWERS_BUDGET = 64 * 1024 * 1024  # bytes of requests and answers kept
LARGEST_KEPT = ANSWERS_BUDGET // 8  # a bigger call is compiled again (its tables are memoized)


@dataclass(frozen=True)
class Answer:
    """What one request was answered with, and what the answer depends on."""

    parsed: ParsedPolicies
    keys: tuple[ValueKey, ...]  # of the resolved policies the answer was compiled from
    response: bytes
    events: tuple[LogEvent, ...]
    summary: tuple[tuple[str, Any], ...]  # the fields of the hook.listener line
    rejections: Rejections = NO_REJECTIONS

    @cached_property
    def settled(self) -> bool:
        """Whether the request's bytes alone decide the answer: every policy's credentials
        are its own spec.password (no store version to ask about)."""
        return all(key.source == PLAIN for key in self.keys)

    def still_holds(self, policies: PolicySet) -> bool:
        return policies.keys == self.keys


class Answers:
    """The memo of answers, within a byte budget, oldest out first."""

    def __init__(self, budget: int = ANSWERS_BUDGET) -> None:
        self._memo: BoundedMemo[bytes, Answer] = BoundedMemo(
            budget, lambda answer: len(answer.response)
        )

    def find(self, request: bytes) -> Answer | None:
        """The answer kept for these very bytes, whether it still holds or not."""
        return self._memo.get(request)

    def keep(self, request: bytes, answer: Answer) -> None:
        if len(request) + len(answer.response) <= LARGEST_KEPT:
            self._memo.put(request, answer)
