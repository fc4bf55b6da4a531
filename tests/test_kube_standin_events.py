"""The API stand-in's events.k8s.io/v1 Events answer lightkube as the API server does:
ValidateEventCreate and ValidateEventUpdate (pkg/apis/core/validation/events.go), patches,
and the faults the recorder's tests use (500, a hung server).
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

import pytest
from lightkube import ApiError, Client
from lightkube.types import PatchType

from tests.support.kube import KubeStandIn

EVENTS = "/apis/events.k8s.io/v1/namespaces/team-a/events"


@pytest.fixture
def client(kube: KubeStandIn) -> Client:
    return kube.client(namespace="team-a")


def event(**fields: Any) -> Any:
    from lightkube.resources.events_v1 import Event  # noqa: PLC0415

    body: dict[str, Any] = {
        "metadata": {"name": "web.0123456789abcdef", "namespace": "team-a"},
        "eventTime": "2026-11-27T09:00:00.000000Z",
        "type": "Warning",
        "reason": "InvalidUsername",
        "action": "Compile",
        "note": "policy team-a/web: spec.username: bad; fix it",
        "regarding": {"kind": "ListenerContextExample", "namespace": "team-a", "name": "web"},
        "reportingController": "extension-server",
        "reportingInstance": "extension-server-a",
        **fields,
    }
    return Event.from_dict({k: v for k, v in body.items() if v is not None})


def causes(error: pytest.ExceptionInfo[ApiError]) -> list[tuple[str | None, str | None]]:
    assert error.value.status.code == 422 and error.value.status.reason == "Invalid"
    details = error.value.status.details
    return [(c.field, c.message) for c in (details.causes if details else None) or []]


def test_a_valid_event_is_created_and_read_back(client: Client) -> None:
    from lightkube.resources.events_v1 import Event  # noqa: PLC0415

    created = client.create(event(series={"count": 2, "lastObservedTime": "2026-11-27T09:01:00Z"}))
    assert (
        created.metadata is not None and created.metadata.uid and created.metadata.resourceVersion
    )
    assert created.metadata.generation is None  # a built-in type
    read = client.get(Event, "web.0123456789abcdef", namespace="team-a")
    assert read.series is not None and read.series.count == 2
    assert read.note == "policy team-a/web: spec.username: bad; fix it"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"reportingController": None}, [("reportingController", "Required value")]),
        ({"reportingController": "Bad Controller"}, [("reportingController", 'Invalid value: "": must be a qualified name')]),
        ({"reportingInstance": None, "action": None, "reason": None},
         [("reportingInstance", "Required value"), ("action", "Required value"), ("reason", "Required value")]),
        ({"note": "x" * 1025}, [("message", 'Invalid value: "": can have at most 1024 characters')]),
        ({"reason": "R" * 129}, [("reason", 'Invalid value: "": can have at most 128 characters')]),
        ({"type": "Error"}, [("type", 'Invalid value: "": has invalid value: Error')]),
        ({"series": {"count": 1, "lastObservedTime": "2026-11-27T09:01:00Z"}},
         [("series.count", 'Invalid value: "": should be at least 2')]),
        ({"deprecatedCount": 3}, [("count", 'Invalid value: "": needs to be unset')]),
        ({"regarding": {"kind": "ListenerContextExample", "name": "web"}},
         [("involvedObject.namespace", 'Invalid value: "": does not match event.namespace')]),
    ],
    ids=["no-controller", "bad-controller", "no-instance-action-reason",
         "note-over-1KiB", "reason-over-128", "bad-type", "series-of-one", "deprecated-count",
         "regarding-no-namespace"],
)  # fmt: skip
def test_what_validation_refuses_on_create(
    client: Client, kube: KubeStandIn, fields: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    with pytest.raises(ApiError) as refused:
        client.create(event(**fields))
    assert causes(refused) == expected
    assert kube.items("Event") == []


def test_a_note_of_1024_bytes_is_accepted_and_counted_in_bytes(client: Client) -> None:
    client.create(event(note="é" * 512))  # 1024 bytes
    with pytest.raises(ApiError) as refused:
        client.create(event(metadata={"name": "other", "namespace": "team-a"}, note="é" * 513))
    assert causes(refused)[0][0] == "message"


def test_updates_may_change_the_series_and_nothing_else(client: Client) -> None:
    from lightkube.resources.events_v1 import Event  # noqa: PLC0415

    created = client.create(event())
    assert created.metadata is not None
    version = created.metadata.resourceVersion
    for patch_type in (PatchType.MERGE, PatchType.STRATEGIC):
        patched = client.patch(
            Event,
            "web.0123456789abcdef",
            {"series": {"count": 5, "lastObservedTime": "2026-11-27T09:05:00.000000Z"}},
            namespace="team-a",
            patch_type=patch_type,
        )
        assert patched.series is not None and patched.series.count == 5
    with pytest.raises(ApiError) as immutable:
        client.patch(
            Event, "web.0123456789abcdef", {"note": "changed"}, namespace="team-a",
            patch_type=PatchType.MERGE,
        )  # fmt: skip
    assert causes(immutable) == [("message", "Invalid value: field is immutable")]
    with pytest.raises(ApiError) as stale:
        client.patch(
            Event, "web.0123456789abcdef",
            {"metadata": {"resourceVersion": version}, "series": {"count": 6, "lastObservedTime": "2026-11-27T09:06:00Z"}},
            namespace="team-a", patch_type=PatchType.MERGE,
        )  # fmt: skip
    assert stale.value.status.code == 409 and stale.value.status.reason == "Conflict"
    with pytest.raises(ApiError) as bad_series:
        client.patch(
            Event, "web.0123456789abcdef", {"series": {"count": 1}}, namespace="team-a",
            patch_type=PatchType.MERGE,
        )  # fmt: skip
    # merged into the series there: its lastObservedTime stays, the count is refused
    assert causes(bad_series) == [("series.count", 'Invalid value: "": should be at least 2')]


def test_the_same_name_twice_is_409_already_exists(client: Client) -> None:
    client.create(event())
    with pytest.raises(ApiError) as exists:
        client.create(event())
    assert (exists.value.status.code, exists.value.status.reason) == (409, "AlreadyExists")


def test_failing_answers_500_and_a_hung_server_holds_requests(
    kube: KubeStandIn, client: Client
) -> None:
    kube.failing = True
    with pytest.raises(ApiError) as failed:
        client.create(event())
    assert (failed.value.status.code, failed.value.status.reason) == (500, "InternalError")
    kube.failing = False
    kube.hang()
    done = threading.Event()

    def create() -> None:
        client.create(event())
        done.set()

    thread = threading.Thread(target=create)
    thread.start()
    while kube.waiting == 0:
        assert thread.is_alive()
        done.wait(0.01)
    assert not done.is_set() and kube.items("Event") == []
    kube.release()
    thread.join(10)
    assert done.is_set() and len(kube.items("Event")) == 1
    assert kube.count("POST", EVENTS) == 2


def test_an_event_time_is_a_micro_time(client: Client) -> None:
    created = client.create(event(eventTime=datetime(2026, 11, 27, 9, 0, 0, 123456, tzinfo=UTC)))
    assert created.eventTime == datetime(2026, 11, 27, 9, 0, 0, 123456, tzinfo=UTC)


def test_an_event_without_an_event_time_is_refused(kube: KubeStandIn) -> None:
    """Sent as raw JSON: lightkube's model will not build an Event without one."""
    body = event().to_dict()
    del body["eventTime"]
    request = urllib.request.Request(
        kube.url + EVENTS,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {kube.token}", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    status = json.loads(refused.value.read())
    assert status["code"] == 422
    assert [(c["field"], c["message"]) for c in status["details"]["causes"]] == [
        ("eventTime", "Required value")
    ]
