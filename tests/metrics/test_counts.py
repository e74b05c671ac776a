"""What the service counts as it answers: webhooks by type, outcome and status (the intake
lane labels its own, since it answers before routing), signature failures by reason, the
intake's latency, 503s by cause, and the query API by route template."""

from __future__ import annotations

import base64
import socket

import orjson
import pytest

from tests.conftest import ClientFactory
from tests.metrics.conftest import API_TOKEN, METRICS_TOKEN, bearer, scrape
from tests.support.client import WebhookClient
from tests.support.payloads import track_webhook

STARTING = "participant-track-recording-starting"
STARTED = "participant-track-recording-started"
WEBHOOKS = "trackhook_webhooks_received_total"
SIGNATURE_FAILURES = "trackhook_signature_failures_total"
INTAKE_COUNT = "trackhook_intake_duration_seconds_count"
UNAVAILABLE = "trackhook_unavailable_responses_total"


async def test_every_outcome_counted_by_type_outcome_and_status(metered: WebhookClient) -> None:
    before = await scrape(metered.http)
    starting = track_webhook("starting", session_id="metrics-outcomes")
    assert (await metered.deliver(starting))["status"] == "applied"
    assert (await metered.deliver(starting))["status"] == "duplicate"
    ignored = {"webhookType": "session-started", "data": {"sessionId": "metrics-outcomes"}}
    assert (await metered.deliver(ignored))["status"] == "ignored"
    rejected = await metered.post(track_webhook("started", kind="webcam"))
    assert rejected.status_code == 422, rejected.text
    body = orjson.dumps(track_webhook("stopped", session_id="metrics-refused"))
    refusals = {
        "missing": None,
        "no_key_verifies": metered.signer.sign(body + b" "),
        "undecodable": "not base64!",
        "wrong_length": base64.b64encode(b"x" * 10).decode(),
    }
    for signature in refusals.values():
        answer = await metered.post_raw(body, signature=signature)
        assert answer.status_code == 401, answer.text
    sign = metered.signer.sign(body)
    twice = [("content-type", "application/json"), ("videosdk-signature", sign)] * 2
    answer = await metered.http.post("/webhooks/videosdk", content=body, headers=twice)
    assert answer.status_code == 401, answer.text

    after = await scrape(metered.http)

    expected = {
        (STARTING, "applied", "200"): 1,
        (STARTING, "duplicate", "200"): 1,
        ("other", "ignored", "200"): 1,
        (STARTED, "rejected", "422"): 1,
        ("unknown", "signature_missing", "401"): 1,
        ("unknown", "signature_invalid", "401"): 4,
    }
    for (webhook_type, outcome, status), count in expected.items():
        labels = {"type": webhook_type, "outcome": outcome, "status": status}
        assert after.minus(before, WEBHOOKS, **labels) == count, labels
    every = after.label_values(WEBHOOKS, "type")
    assert every <= {STARTING, STARTED, "other", "unknown"} | {
        f"participant-track-recording-{s}" for s in ("stopping", "stopped", "failed")
    }
    for reason in ("missing", "no_key_verifies", "undecodable", "wrong_length", "multiple"):
        assert after.minus(before, SIGNATURE_FAILURES, reason=reason) == 1, reason
    assert after.minus(before, SIGNATURE_FAILURES, reason="key_unavailable") == 0
    # The intake's latency: every answer observed once, by status.
    for status, count in (("200", 3), ("401", 5), ("422", 1)):
        assert after.minus(before, INTAKE_COUNT, status=status) == count, status
    assert after.minus(before, "trackhook_intake_duration_seconds_sum", status="200") > 0
    assert (
        after.minus(before, "trackhook_intake_duration_seconds_bucket", status="200", le="+Inf")
        == 3
    )
    # A recording opened with `starting`: one recording moved to that status.
    transitions = "trackhook_recording_transitions_total"
    assert after.minus(before, transitions, status="starting") == 1


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_503s_counted_by_cause(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    no_key = await make_client(
        metrics_token=METRICS_TOKEN,
        videosdk_public_key=None,
        videosdk_public_key_url=f"http://127.0.0.1:{_closed_port()}/rsa-public-key",
    )
    no_database = await make_client(
        metrics_token=METRICS_TOKEN,
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{_closed_port()}/none",
        db_connect_timeout_seconds=2,
    )
    before = await scrape(no_key.http)

    assert (await no_key.post(track_webhook("starting"))).status_code == 503
    assert (await no_database.post(track_webhook("starting"))).status_code == 503
    assert (await no_database.http.get("/readyz")).status_code == 503
    # The gauges cannot be read from that database; the scrape still answers, at once.
    await scrape(no_database.http)
    after = await scrape(no_key.http)

    assert after.minus(before, UNAVAILABLE, cause="public_key_unavailable") == 1
    assert after.minus(before, UNAVAILABLE, cause="database_unavailable") == 2
    assert after.minus(before, SIGNATURE_FAILURES, reason="key_unavailable") == 1
    for outcome in ("public_key_unavailable", "database_unavailable"):
        labels = {"type": "unknown", "outcome": outcome, "status": "503"}
        assert after.minus(before, WEBHOOKS, **labels) == 1, outcome
    assert after.minus(before, "trackhook_database_stats_failures_total") >= 1
    readyz = {"route": "/readyz", "method": "GET", "status": "503"}
    assert after.minus(before, "trackhook_api_requests_total", **readyz) == 1


async def test_api_requests_counted_by_route_template(metered: WebhookClient) -> None:
    http = metered.http
    recording_id = (await metered.deliver(track_webhook("starting")))["recordingId"]
    before = await scrape(http)
    token = bearer(API_TOKEN)

    for path in (f"/v1/recordings/{recording_id}", "/v1/recordings/987654321"):
        await http.get(path, headers=token)
    assert (await http.get("/v1/recordings/not-an-id-7c1e", headers=token)).status_code == 404
    assert (await http.get("/v1/recordings", headers={})).status_code == 401
    assert (await http.get("/v1/recordings?limit=1", headers=token)).status_code == 200
    assert (await http.get("/no/such/path/5d2a")).status_code == 404
    after = await scrape(http)

    requests = "trackhook_api_requests_total"
    one = {"route": "/v1/recordings/{recording_id}", "method": "GET"}
    assert after.minus(before, requests, **one, status="200") == 1
    assert after.minus(before, requests, **one, status="404") == 2
    listing = {"route": "/v1/recordings", "method": "GET"}
    assert after.minus(before, requests, **listing, status="200") == 1
    assert after.minus(before, requests, **listing, status="401") == 1
    unmatched = {"route": "unmatched", "method": "GET", "status": "404"}
    assert after.minus(before, requests, **unmatched) == 1
    latency = "trackhook_api_request_duration_seconds_count"
    assert after.minus(before, latency, route="/v1/recordings/{recording_id}") == 3
    # Never a label per id or per path.
    segments = {
        part for route in after.label_values(requests, "route") for part in route.split("/")
    }
    for needle in (recording_id, "987654321", "not-an-id-7c1e", "no", "5d2a"):
        assert needle not in segments, needle
    # The scrape is counted too, by its own route.
    assert after.minus(before, requests, route="/metrics", method="GET", status="200") == 1
