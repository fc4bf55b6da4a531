"""`kubectl describe`'s Events section, built from the Kubernetes API stand-in's Events.

As kubectl's DescribeEvents prints them (k8s.io/kubectl/pkg/describe): the Events whose
involved object is the policy (name, namespace and uid, as kubectl's field selector asks),
oldest first, in columns Type, Reason, Age, From, Message, where Age is
`<since last> (x<count> over <since first>)` for an Event with a series and From is the
reporting controller. Ages are rendered like apimachinery's HumanDuration.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.support.kube import KubeStandIn


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration, for the ranges a test sees (under two days)."""
    whole = max(0, int(seconds))
    minutes, hours = whole // 60, whole // 3600
    if whole < 120:
        return f"{whole}s"
    if minutes < 10:
        return f"{minutes}m{whole % 60}s" if whole % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    return f"{hours}h" if hours < 48 else f"{hours // 24}d"


def _since(stamp: str, now: datetime) -> str:
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return human_duration((now - moment).total_seconds())


def events_of(kube: KubeStandIn, namespace: str, name: str, uid: str | None) -> list[Any]:
    """The policy's Events, as `kubectl describe` selects them, oldest first."""
    found = [
        event
        for event in kube.items("Event", namespace)
        if (event.get("regarding") or {}).get("name") == name
        and (uid is None or event["regarding"].get("uid") == uid)
    ]
    return sorted(
        found, key=lambda e: (e.get("series") or {}).get("lastObservedTime") or e["eventTime"]
    )


def describe(kube: KubeStandIn, policy: dict[str, Any], now: datetime | None = None) -> str:
    """`kubectl describe listenercontextexample NAME`, header and Events."""
    now = now or datetime.now(UTC)
    meta = policy["metadata"]
    lines = [
        f"Name:         {meta['name']}",
        f"Namespace:    {meta['namespace']}",
        f"API Version:  {policy['apiVersion']}",
        f"Kind:         {policy['kind']}",
    ]
    events = events_of(kube, meta["namespace"], meta["name"], meta.get("uid"))
    if not events:
        return "\n".join([*lines, "Events:       <none>"])
    rows = [
        ("Type", "Reason", "Age", "From", "Message"),
        ("----", "------", "----", "----", "-------"),
    ]
    for event in events:
        first = _since(event["eventTime"], now)
        series = event.get("series")
        age = (
            f"{_since(series['lastObservedTime'], now)} (x{series['count']} over {first})"
            if series
            else first
        )
        rows.append(
            (
                event["type"],
                event["reason"],
                age,
                event["reportingController"],
                event["note"].strip(),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines.append("Events:")
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  " + "  ".join([*cells, row[4]]))
    return "\n".join(lines)
