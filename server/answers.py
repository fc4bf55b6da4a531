"""Whole answers to PostHTTPListenerModify, kept by the bytes of the request they answer.

Envoy Gateway sends the same listener with the same policies on every translation. A
request seen before is answered with the bytes sent last time, without decoding the
request or encoding a response, once its policies resolve to the very same credentials
as then: a rotated or expired secret resolves anew, and the call is compiled again. What
the first answer logged is offered to the log again, which lets each line through once
per interval (server/report.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from compiler.memo import BoundedMemo
from compiler.pipeline import ParsedPolicies, PolicySet, Resolver, resolve_policies
from compiler.users import Resolved
from server.report import NO_REJECTIONS, LogEvent, Rejections

ANSWERS_BUDGET = 64 * 1024 * 1024  # bytes of requests and answers kept
LARGEST_KEPT = ANSWERS_BUDGET // 8  # a bigger call is compiled again (its tables are memoized)


@dataclass(frozen=True)
class Answer:
    """What one request was answered with, and what the answer depends on."""

    parsed: ParsedPolicies
    resolved: tuple[Resolved, ...]  # the very objects the answer was compiled from
    response: bytes
    events: tuple[LogEvent, ...]
    summary: tuple[tuple[str, Any], ...]  # the fields of the hook.listener line
    rejections: Rejections = NO_REJECTIONS

    def still_holds(self, policies: PolicySet) -> bool:
        return _same(self.resolved, policies.resolved)


class Answers:
    """The memo of answers, within a byte budget, oldest out first."""

    def __init__(self, budget: int = ANSWERS_BUDGET) -> None:
        self._memo: BoundedMemo[bytes, Answer] = BoundedMemo(
            budget, lambda answer: len(answer.response)
        )

    def find(self, request: bytes, resolver: Resolver) -> tuple[Answer | None, PolicySet | None]:
        """The kept answer if it still holds, and the policies resolved on the way."""
        answer = self._memo.get(request)
        if answer is None:
            return None, None
        policies = resolve_policies(answer.parsed, resolver)
        return (answer if answer.still_holds(policies) else None), policies

    def keep(self, request: bytes, answer: Answer) -> None:
        if len(request) + len(answer.response) <= LARGEST_KEPT:
            self._memo.put(request, answer)


def _same(kept: Sequence[Resolved], now: Sequence[Resolved]) -> bool:
    return len(kept) == len(now) and all(a is b for a, b in zip(kept, now, strict=True))
