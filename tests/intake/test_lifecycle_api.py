"""The lifecycle rules, observed through the HTTP API: orderings, late events, terminal
states, exact repeats, file merging and restarts."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

from tests.support.client import WebhookClient
from tests.support.payloads import LIFECYCLE, file_entry, track_webhook

FOUR = ("starting", "started", "stopping", "stopped")
TIMESTAMPS = ("startingAt", "startedAt", "stoppingAt", "stoppedAt", "failedAt")


async def fetch(client: WebhookClient, recording_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/recordings/{recording_id}")
    assert response.status_code == 200, response.text
    recording: dict[str, Any] = response.json()
    return recording


async def recordings_of(client: WebhookClient, session_id: str) -> list[dict[str, Any]]:
    response = await client.get("/v1/recordings", sessionId=session_id, limit=500)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return sorted(items, key=lambda item: item["sequence"])


def instant(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def paths(recording: dict[str, Any]) -> list[str]:
    return [entry["filePath"] for entry in recording["files"]]


def without_events(recording: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in recording.items() if name != "events"}


async def check_ordering(client: WebhookClient, order: tuple[str, ...]) -> None:
    # Each ordering gets its own session, so all 24 share one clean database.
    session_id = "s-" + "-".join(order)
    answers = []
    for status in order:
        files = [file_entry("a"), file_entry("b")] if status == "stopped" else None
        payload = track_webhook(status, session_id=session_id, files=files)
        answers.append(await client.deliver(payload))

    assert [answer["status"] for answer in answers] == ["applied"] * 4
    assert len({answer["recordingId"] for answer in answers}) == 1
    [listed] = await recordings_of(client, session_id)
    recording = await fetch(client, answers[0]["recordingId"])
    assert without_events(recording) == listed
    assert recording["status"] == "stopped"
    assert recording["sequence"] == 1
    assert all(recording[f"{status}At"] is not None for status in FOUR)
    assert recording["failedAt"] is None
    assert paths(recording) == ["/encoded/videos/a.mp4", "/encoded/videos/b.mp4"]
    assert [event["webhookType"] for event in recording["events"]] == [
        f"participant-track-recording-{status}" for status in order
    ]


async def test_every_ordering_ends_stopped(client: WebhookClient) -> None:
    orderings = list(itertools.permutations(FOUR))
    assert len(orderings) == 24
    for order in orderings:
        try:
            await check_ordering(client, order)
        except AssertionError as exc:
            raise AssertionError(f"ordering {' -> '.join(order)}: {exc}") from exc
    listing = (await client.get("/v1/recordings", limit=500)).json()["items"]
    assert len(listing) == 24


LATE_ORDERS: list[tuple[tuple[str, ...], str]] = [
    (("starting", "stopping", "started"), "stopping"),
    (("started", "starting"), "started"),
    (("stopping", "starting", "started"), "stopping"),
    (("stopped", "stopping", "started", "starting"), "stopped"),
    (("failed", "started", "stopping"), "failed"),
]


async def test_late_event_records_its_time_but_never_moves_status_back(
    client: WebhookClient,
) -> None:
    rank = {"starting": 0, "started": 1, "stopping": 2, "stopped": 3, "failed": 3}
    for index, (order, final) in enumerate(LATE_ORDERS):
        session_id = f"late-{index}"
        seen = []
        for status in order:
            answer = await client.deliver(track_webhook(status, session_id=session_id))
            assert answer["status"] == "applied", order
            recording = await fetch(client, answer["recordingId"])
            assert recording[f"{status}At"] is not None, order
            seen.append(recording)

        statuses = [recording["status"] for recording in seen]
        assert [rank[s] for s in statuses] == sorted(rank[s] for s in statuses), order
        assert statuses[-1] == final, order
        assert {name for name in TIMESTAMPS if seen[-1][name] is not None} == {
            f"{status}At" for status in order
        }, order
        assert len(await recordings_of(client, session_id)) == 1, order


async def test_late_event_keeps_the_time_it_was_received(client: WebhookClient) -> None:
    await client.deliver(track_webhook("starting"))
    stopped = await client.deliver(track_webhook("stopped"))
    before = await fetch(client, stopped["recordingId"])

    await client.deliver(track_webhook("started"))

    after = await fetch(client, stopped["recordingId"])
    assert after["status"] == "stopped"
    assert instant(after["startedAt"]) >= instant(before["stoppedAt"])
    for name in ("startingAt", "stoppedAt", "createdAt"):
        assert after[name] == before[name]


async def test_first_terminal_event_wins(client: WebhookClient) -> None:
    for first, second in (("stopped", "failed"), ("failed", "stopped")):
        session_id = f"{first}-first"
        await client.deliver(track_webhook("starting", session_id=session_id))
        one = await client.deliver(
            track_webhook(first, session_id=session_id, files=[file_entry("one")])
        )
        two = await client.deliver(
            track_webhook(second, session_id=session_id, files=[file_entry("two")])
        )

        assert one["recordingId"] == two["recordingId"]
        assert two["status"] == "applied"
        recording = await fetch(client, two["recordingId"])
        assert recording["status"] == first
        assert recording["stoppedAt"] is not None and recording["failedAt"] is not None
        assert paths(recording) == ["/encoded/videos/one.mp4", "/encoded/videos/two.mp4"]
        assert recording["events"][-1]["webhookType"].endswith(second)


async def test_failed_then_stopped_still_merges_the_stopped_files(client: WebhookClient) -> None:
    failed = await client.deliver(track_webhook("failed"))
    await client.deliver(track_webhook("stopped", files=[file_entry("late")]))

    [recording] = await recordings_of(client, track_webhook("failed")["data"]["sessionId"])
    assert recording["id"] == failed["recordingId"]
    assert recording["status"] == "failed"
    assert paths(recording) == ["/encoded/videos/late.mp4"]


async def test_exact_repeat_is_a_duplicate_and_changes_nothing(client: WebhookClient) -> None:
    for status in LIFECYCLE:
        session_id = f"repeat-{status}"
        if status != "starting":
            await client.deliver(track_webhook("starting", session_id=session_id))
        payload = track_webhook(status, session_id=session_id, files=[file_entry("a")])
        first = await client.deliver(payload)
        before = await fetch(client, first["recordingId"])

        # Key order and spacing do not make a different delivery.
        reordered = {
            "data": dict(reversed(list(payload["data"].items()))),
            "webhookType": payload["webhookType"],
        }
        assert list(reordered) != list(payload)
        repeats = [await client.deliver(payload), await client.deliver(reordered)]

        after = await fetch(client, first["recordingId"])
        assert [repeat["status"] for repeat in repeats] == ["duplicate", "duplicate"], status
        assert {repeat["recordingId"] for repeat in repeats} == {first["recordingId"]}, status
        assert without_events(after) == without_events(before), status
        assert [event["outcome"] for event in after["events"][-3:]] == [
            "applied",
            "duplicate",
            "duplicate",
        ], status
        assert len(await recordings_of(client, session_id)) == 1, status


async def test_repeated_stopped_merges_files_in_first_received_order(
    client: WebhookClient,
) -> None:
    a, b, c, d = (file_entry(name) for name in "abcd")
    await client.deliver(track_webhook("stopped", files=[a, b]))
    await client.deliver(track_webhook("stopped", files=[b, c]))
    await client.deliver(track_webhook("stopped", files=[d, c, a]))
    await client.deliver(track_webhook("stopped", files=[]))
    no_files = track_webhook("stopped")
    del no_files["data"]["fileDetails"]
    last = await client.deliver(no_files)

    recording = await fetch(client, last["recordingId"])
    assert paths(recording) == [entry["filePath"] for entry in (a, b, c, d)]
    assert recording["files"] == [a, b, c, d]
    assert recording["status"] == "stopped"
    assert len(await recordings_of(client, recording["sessionId"])) == 1


async def test_files_arriving_on_other_types_are_kept(client: WebhookClient) -> None:
    await client.deliver(track_webhook("stopping", files=[file_entry("early")]))
    answer = await client.deliver(track_webhook("stopped", files=[file_entry("main")]))

    recording = await fetch(client, answer["recordingId"])
    assert paths(recording) == ["/encoded/videos/early.mp4", "/encoded/videos/main.mp4"]


async def run_lifecycle(client: WebhookClient, name: str) -> str:
    answers = [await client.deliver(track_webhook(status)) for status in FOUR[:3]]
    answers.append(await client.deliver(track_webhook("stopped", files=[file_entry(name)])))
    assert len({answer["recordingId"] for answer in answers}) == 1
    return str(answers[0]["recordingId"])


async def test_restart_after_a_full_lifecycle_opens_sequence_2(client: WebhookClient) -> None:
    first_id = await run_lifecycle(client, "run-1")
    first_before = await fetch(client, first_id)

    starting = await client.deliver(track_webhook("starting"))
    started = await client.deliver(track_webhook("started"))

    assert starting["status"] == started["status"] == "applied"
    assert starting["recordingId"] != first_id
    assert started["recordingId"] == starting["recordingId"]
    second = await fetch(client, starting["recordingId"])
    assert (second["sequence"], second["status"]) == (2, "started")
    assert second["files"] == [] and second["stoppedAt"] is None
    assert without_events(await fetch(client, first_id)) == without_events(first_before)

    for status in ("stopping", "stopped"):
        files = [file_entry("run-2")] if status == "stopped" else None
        answer = await client.deliver(track_webhook(status, files=files))
        assert answer["recordingId"] == starting["recordingId"]
    second = await fetch(client, starting["recordingId"])
    assert (second["sequence"], second["status"]) == (2, "stopped")
    assert paths(second) == ["/encoded/videos/run-2.mp4"]
    assert [e["webhookType"].rsplit("-", 1)[1] for e in second["events"]] == list(FOUR)

    third = await client.deliver(track_webhook("starting"))
    listed = await recordings_of(client, second["sessionId"])
    assert [(r["sequence"], r["status"]) for r in listed] == [
        (1, "stopped"),
        (2, "stopped"),
        (3, "starting"),
    ]
    assert listed[2]["id"] == third["recordingId"]


async def test_restart_that_begins_with_started(client: WebhookClient) -> None:
    first_id = await run_lifecycle(client, "run-1")

    started = await client.deliver(track_webhook("started"))
    starting = await client.deliver(track_webhook("starting"))

    assert started["recordingId"] != first_id
    assert starting["recordingId"] == started["recordingId"]
    second = await fetch(client, started["recordingId"])
    assert (second["sequence"], second["status"]) == (2, "started")
    assert second["startingAt"] is not None


async def test_restart_after_failed(client: WebhookClient) -> None:
    await client.deliver(track_webhook("starting"))
    failed = await client.deliver(track_webhook("failed"))

    again = await client.deliver(track_webhook("starting"))

    assert again["recordingId"] != failed["recordingId"]
    assert (await fetch(client, again["recordingId"]))["sequence"] == 2


async def test_late_started_after_stopped_belongs_to_that_recording(
    client: WebhookClient,
) -> None:
    for status in ("starting", "stopping"):
        await client.deliver(track_webhook(status))
    await client.deliver(track_webhook("stopped", files=[file_entry("a")]))

    late = await client.deliver(track_webhook("started"))

    [recording] = await recordings_of(client, track_webhook("started")["data"]["sessionId"])
    assert late["status"] == "applied"
    assert late["recordingId"] == recording["id"]
    assert (recording["sequence"], recording["status"]) == (1, "stopped")
    assert recording["startedAt"] is not None
    assert paths(recording) == ["/encoded/videos/a.mp4"]


async def test_late_starting_after_stopped_belongs_to_that_recording(
    client: WebhookClient,
) -> None:
    for status in ("started", "stopped"):
        await client.deliver(track_webhook(status))

    late = await client.deliver(track_webhook("starting"))
    repeat = await client.deliver(track_webhook("started"))

    listed = await recordings_of(client, track_webhook("started")["data"]["sessionId"])
    assert late["recordingId"] == listed[0]["id"]
    assert listed[0]["startingAt"] is not None
    # `started` is now held by the finished recording, so a repeat starts run 2.
    assert [r["sequence"] for r in listed] == [1, 2]
    assert repeat["recordingId"] == listed[1]["id"]


async def test_first_event_of_any_type_creates_the_recording(client: WebhookClient) -> None:
    files = [file_entry("first")]
    for status in LIFECYCLE:
        session_id = f"first-{status}"
        answer = await client.deliver(track_webhook(status, session_id=session_id, files=files))

        recording = await fetch(client, answer["recordingId"])
        assert (recording["sequence"], recording["status"]) == (1, status)
        assert [name for name in TIMESTAMPS if recording[name] is not None] == [f"{status}At"]
        assert recording["createdAt"] == recording["updatedAt"] == recording[f"{status}At"]
        assert recording["files"] == files
        assert (
            recording["meetingId"],
            recording["sessionId"],
            recording["participantId"],
            recording["kind"],
        ) == ("jvsg-8rjn-j304", session_id, "abcd", "audio")
    assert len((await client.get("/v1/recordings")).json()["items"]) == len(LIFECYCLE)


async def test_kinds_participants_and_sessions_are_separate_recordings(
    client: WebhookClient,
) -> None:
    keys = list(
        itertools.product(
            ("s-1", "s-2"), ("p-1", "p-2"), ("audio", "video", "screen_audio", "screen_video")
        )
    )
    opened = {}
    for session_id, participant_id, kind in keys:
        answer = await client.deliver(
            track_webhook(
                "starting", session_id=session_id, participant_id=participant_id, kind=kind
            )
        )
        assert answer["status"] == "applied"
        opened[(session_id, participant_id, kind)] = answer["recordingId"]
    stop = track_webhook("stopped", session_id="s-2", participant_id="p-1", kind="screen_video")
    stopped = await client.deliver(stop)

    assert len(set(opened.values())) == len(keys)
    assert stopped["recordingId"] == opened[("s-2", "p-1", "screen_video")]
    listing = (await client.get("/v1/recordings", limit=500)).json()["items"]
    assert len(listing) == len(keys)
    by_id = {item["id"]: item for item in listing}
    for (session_id, participant_id, kind), recording_id in opened.items():
        item = by_id[recording_id]
        assert (item["sessionId"], item["participantId"], item["kind"]) == (
            session_id,
            participant_id,
            kind,
        )
        assert item["sequence"] == 1
        expected = "stopped" if recording_id == stopped["recordingId"] else "starting"
        assert item["status"] == expected


async def test_meeting_id_is_not_part_of_the_key(client: WebhookClient) -> None:
    first = await client.deliver(track_webhook("starting", meeting_id="m-1"))
    second = await client.deliver(track_webhook("started", meeting_id="m-2"))

    assert first["recordingId"] == second["recordingId"]


async def test_a_retry_of_run_1s_stopped_after_run_2_started_changes_nothing(
    client: WebhookClient,
) -> None:
    """Issue 10, finding 4: the byte-identical retry used to be applied to run 2, which
    became `stopped` with run 1's file."""
    session = "retry-after-restart"
    stopped = track_webhook("stopped", session_id=session, files=[file_entry("run-1")])
    await client.deliver(track_webhook("starting", session_id=session))
    first = await client.deliver(stopped)
    second = await client.deliver(track_webhook("starting", session_id=session))
    assert second["recordingId"] != first["recordingId"]

    retry = await client.deliver(stopped)

    assert (retry["status"], retry["recordingId"]) == ("duplicate", first["recordingId"])
    run_2 = (await client.get(f"/v1/recordings/{second['recordingId']}")).json()
    assert (run_2["status"], run_2["files"], run_2["version"]) == ("starting", [], 1)
    run_1 = (await client.get(f"/v1/recordings/{first['recordingId']}")).json()
    assert [e["outcome"] for e in run_1["events"]] == ["applied", "applied", "duplicate"]
