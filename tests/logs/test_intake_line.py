"""The intake's line (issue 11, item 2): one per delivery the lane answers, after the
answer, with the outcome (or the error code), the webhook's type and ids, the event and
recording ids, the HTTP status and the duration; never the payload, the signature, a token
or a key."""

from __future__ import annotations

from typing import Any
from unittest.mock import ANY

import orjson
import pytest

from tests.logs.conftest import (
    INTAKE_FIELDS,
    LINE_FIELDS,
    PAYLOAD_ONLY,
    TOKEN,
    AppFactory,
    intake_lines,
    json_lines,
)
from tests.support.payloads import file_entry, track_webhook
from tests.support.signing import Signer

IDS = {"session_id": "log-sess", "participant_id": "log-part", "kind": "video"}


def webhook(status: str, **files: Any) -> dict[str, Any]:
    return track_webhook(
        status,
        session_id=IDS["session_id"],
        participant_id=IDS["participant_id"],
        kind=IDS["kind"],
        meeting_id="log-meet",
        **files,
    )


async def test_one_line_per_delivery_with_its_outcome_and_ids(
    make_app: AppFactory, capsys: pytest.CaptureFixture[str], signer: Signer
) -> None:
    served = await make_app(log_format="json", api_tokens=[TOKEN], max_body_bytes=2048)
    client = served.client
    capsys.readouterr()
    stopped = webhook("stopped", files=[file_entry(PAYLOAD_ONLY)])
    applied = await client.deliver(webhook("starting"))
    stored = await client.deliver(stopped)
    duplicate = await client.deliver(stopped)
    ignored = await client.deliver({"webhookType": "meeting-started", "data": {"meetingId": "m"}})
    rejected = await client.post({**webhook("started"), "data": {"meetingId": "log-meet"}})
    unsigned = await client.post_raw(orjson.dumps(webhook("started")), signature=None)
    forged = await client.post_raw(orjson.dumps(webhook("started")), signature="Zm9yZ2Vk")
    not_json = await client.post_raw(b"{not json")
    too_large = await client.post_raw(b" " * 4096)
    listed = await client.http.get("/v1/recordings", headers={"authorization": f"Bearer {TOKEN}"})
    output = capsys.readouterr().err
    lines = json_lines(output)

    assert [rejected.status_code, unsigned.status_code, forged.status_code] == [422, 401, 401]
    assert [not_json.status_code, too_large.status_code, listed.status_code] == [400, 413, 200]
    for line in lines:
        assert set(LINE_FIELDS) <= set(line), line
    logged = intake_lines(lines)
    for line in logged:
        assert set(INTAKE_FIELDS) <= set(line), line
        assert line["level"] == "INFO"
        assert isinstance(line["duration_ms"], float | int) and line["duration_ms"] >= 0
    summary = [(line["outcome"], line["status"], line["event_id"]) for line in logged]
    assert summary == [
        ("applied", 200, applied["eventId"]),
        ("applied", 200, stored["eventId"]),
        ("duplicate", 200, duplicate["eventId"]),
        ("ignored", 200, ignored["eventId"]),
        ("rejected", 422, ANY),
        ("signature_missing", 401, None),
        ("signature_invalid", 401, None),
        ("invalid_json", 400, None),
        ("payload_too_large", 413, None),
    ]
    first = logged[0]
    assert first["webhook_type"] == "participant-track-recording-starting"
    assert {field: first[field] for field in IDS} == IDS
    assert first["meeting_id"] == "log-meet"
    assert first["recording_id"] == applied["recordingId"]
    assert [line["recording_id"] for line in logged[1:3]] == [stored["recordingId"]] * 2
    assert (logged[3]["webhook_type"], logged[3]["meeting_id"]) == ("meeting-started", "m")
    assert logged[3]["recording_id"] is None
    assert int(logged[4]["event_id"]) > int(ignored["eventId"])  # the rejected one is logged
    assert logged[4]["webhook_type"] == "participant-track-recording-started"
    assert logged[4]["recording_id"] is None
    for line in logged[5:]:
        assert [line[field] for field in ("webhook_type", "session_id", "recording_id")] == [
            None
        ] * 3
    # Never the payload, the signature, a token or a key.
    assert PAYLOAD_ONLY not in output
    assert signer.sign(orjson.dumps(stopped)) not in output
    assert "Zm9yZ2Vk" not in output
    assert TOKEN not in output
    assert "PUBLIC KEY" not in output
    pem_body = "".join(signer.public_pem.splitlines()[1:-1])
    assert pem_body[:40] not in output


async def test_the_text_format_is_one_readable_line(
    make_app: AppFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    served = await make_app()  # LOG_FORMAT=text, the default
    capsys.readouterr()
    answer = await served.client.deliver(webhook("starting"))
    response = await served.client.post_raw(b"{}", signature=None, headers={"x-request-id": "r-1"})
    lines = [line for line in capsys.readouterr().err.splitlines() if "trackhook.intake" in line]

    assert response.status_code == 401
    applied, missing = lines
    assert applied.startswith("INFO trackhook.intake: webhook answered outcome=applied ")
    for pair in (
        "status=200",
        "webhook_type=participant-track-recording-starting",
        "session_id=log-sess",
        f"event_id={answer['eventId']}",
        f"recording_id={answer['recordingId']}",
        "duration_ms=",
        "request_id=",
    ):
        assert pair in applied, applied
    assert missing.startswith(
        "INFO trackhook.intake: webhook answered outcome=signature_missing status=401 "
    )
    assert missing.endswith(" request_id=r-1"), missing
    assert "event_id" not in missing  # what is not known is left out


async def test_below_info_there_is_no_line(
    make_app: AppFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    served = await make_app(log_format="json", log_level="WARNING")
    await served.client.deliver(webhook("starting"))
    lines = json_lines(capsys.readouterr().err)

    assert any("API_AUTH=off" in line["message"] for line in lines), lines  # a WARNING
    assert intake_lines(lines) == []


async def test_readiness_probes_log_no_alembic_lines(
    make_app: AppFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    served = await make_app(log_format="json", log_level="DEBUG")
    started = json_lines(capsys.readouterr().err)
    for _ in range(3):
        assert (await served.http.get("/readyz")).status_code == 200
    lines = json_lines(capsys.readouterr().err)

    assert any(line["message"].startswith("database: ") for line in started), started
    assert [line for line in lines if line["logger"].startswith("alembic")] == []
