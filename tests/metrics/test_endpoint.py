"""`GET /metrics` is served only with METRICS_TOKEN, and only to that token."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from app.core.config import Settings, validation_problems
from tests.conftest import ClientFactory
from tests.metrics.conftest import API_TOKEN, METRICS_TOKEN, bearer, scrape
from tests.support.client import WebhookClient


async def test_not_served_without_a_metrics_token(make_client: ClientFactory) -> None:
    client = await make_client(api_tokens=[API_TOKEN])

    for headers in ({}, bearer(API_TOKEN), bearer(METRICS_TOKEN)):
        response = await client.http.get("/metrics", headers=headers)

        assert response.status_code == 404, response.text
        assert response.json()["error"] == "not_found"


async def test_only_the_metrics_token_opens_it(metered: WebhookClient) -> None:
    http = metered.http
    cases = {
        "missing_token": [{}, {"authorization": "Bearer "}, {"authorization": METRICS_TOKEN}],
        "invalid_token": [
            bearer("nope"),
            bearer(API_TOKEN),  # an API token is not a metrics token
            bearer(METRICS_TOKEN + "x"),
            bearer(METRICS_TOKEN[:-1]),
        ],
    }
    for error, header_sets in cases.items():
        for headers in header_sets:
            response = await http.get("/metrics", headers=headers)

            assert response.status_code == 401, (headers, response.text)
            assert response.json()["error"] == error, headers
            assert response.headers["www-authenticate"] == "Bearer"
            assert "trackhook_" not in response.text

    answer = await scrape(http)

    assert answer.has("trackhook_signature_failures_total", reason="no_key_verifies")
    # Nor does the metrics token open /v1.
    assert (await http.get("/v1/recordings", headers=bearer(METRICS_TOKEN))).status_code == 401
    assert (await http.get("/v1/recordings", headers=bearer(API_TOKEN))).status_code == 200


async def test_the_token_from_a_file(make_client: ClientFactory, tmp_path: Path) -> None:
    token_file = tmp_path / "metrics-token"
    token_file.write_text(f"  {METRICS_TOKEN}\n")
    client = await make_client(metrics_token_file=token_file)

    await scrape(client.http)
    assert (await client.http.get("/metrics", headers=bearer("other"))).status_code == 401


def test_token_settings_refused_at_start_up(tmp_path: Path) -> None:
    token_file = tmp_path / "metrics-token"
    token_file.write_text(METRICS_TOKEN)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    refused = {
        "set METRICS_TOKEN or METRICS_TOKEN_FILE, not both": {
            "metrics_token": SecretStr("a"),
            "metrics_token_file": token_file,
        },
        "holds a blank": {"metrics_token": "two words"},
        "holds no token": {"metrics_token_file": empty},
        "No such file": {"metrics_token_file": tmp_path / "missing"},
    }
    for message, values in refused.items():
        with pytest.raises(ValidationError, match=message):
            Settings(**values)
    # The line a command prints names the variable, never the token.
    with pytest.raises(ValidationError) as refusal:
        Settings(metrics_token="hunter2 hunter3")
    (problem,) = validation_problems(refusal.value)
    assert problem.startswith("METRICS_TOKEN: METRICS_TOKEN holds a blank"), problem
    assert "hunter" not in problem
    assert Settings(metrics_token="  ").metrics_token is None  # empty is unset
