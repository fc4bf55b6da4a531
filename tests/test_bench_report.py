"""docs/performance.md opens with what a user decides on, and the message-size answer holds.

The figures come from `make bench` (not part of `make test`); these check the parts of the
page that are arithmetic, not timing: bytes per user and how many users fit in 4 MiB.
"""

from __future__ import annotations

from pathlib import Path

from bench import capacity, report
from bench.context import Context
from tests.support.builders import http_listener, https_listener

PAGE = Path(__file__).resolve().parents[1] / "docs" / "performance.md"


def test_each_user_costs_its_htpasswd_line_in_every_http_connection_manager() -> None:
    plain = capacity.NAMES["plain names (11 bytes, `user-000001`)"]
    one = capacity.fit("plain", plain, http_listener(), 1, capacity.DEFAULT_LIMIT)
    three = capacity.fit("plain", plain, https_listener("a", "b", "c"), 3, capacity.DEFAULT_LIMIT)

    assert one.per_user == 11 + 35  # "user-000001:{SHA}<28 characters>\n"
    assert three.per_user == 3 * one.per_user
    assert one.checked <= 4 * 2**20 < one.checked + one.per_user  # fit() compiled the count
    assert three.users == (4 * 2**20 - three.base) // three.per_user


def test_the_page_opens_with_what_to_plan_for(tmp_path: Path) -> None:
    context = Context(tmp_path, None, "no corpus")
    context.decisions.append(("Users that fit", "91,169", "section 6"))
    body = report.markdown([], context, {"CPU": "x"}, 1.0)
    assert body.startswith("## What to plan for\n\n| question | answer | measured in |")
    assert "| Users that fit | 91,169 | section 6 |" in body

    intro = PAGE.read_text().split(report.MARKER, 1)[0]
    assert "issue" not in intro.lower()
    assert "time each listener adds to a translation" in " ".join(intro.split())
