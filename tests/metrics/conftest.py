"""`GET /metrics` as Prometheus reads it: scrapes parsed with prometheus-client's own parser,
and an app with a metrics token (issue 11, item 1).

The metrics of the apps built in this process are the process's (one registry), so a test
reads what changed between two scrapes, never absolute counts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ClientFactory
from tests.support.client import WebhookClient

METRICS_TOKEN = "metrics-test-token-8e1f0c"
API_TOKEN = "api-test-token-3b9d27"
Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Scrape:
    """One scrape's samples: (sample name, labels) -> value."""

    samples: Mapping[tuple[str, Labels], float]
    text: str

    @classmethod
    def parse(cls, text: str) -> Scrape:
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        return cls(samples, text)

    def value(self, name: str, **labels: str) -> float:
        """A sample's value; 0 for a series not (yet) exposed."""
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def has(self, name: str, **labels: str) -> bool:
        return (name, tuple(sorted(labels.items()))) in self.samples

    def label_values(self, name: str, label: str) -> set[str]:
        return {
            dict(labels)[label]
            for sample, labels in self.samples
            if sample == name and label in dict(labels)
        }

    def minus(self, earlier: Scrape, name: str, **labels: str) -> float:
        return self.value(name, **labels) - earlier.value(name, **labels)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def scrape(http: httpx.AsyncClient, token: str = METRICS_TOKEN) -> Scrape:
    response = await http.get("/metrics", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return Scrape.parse(response.text)


def sync_scrape(base_url: str, token: str = METRICS_TOKEN) -> Scrape:
    """A scrape of a real server, on a new connection (so any worker may answer it)."""
    response = httpx.get(base_url + "/metrics", headers=bearer(token), timeout=10)
    assert response.status_code == 200, response.text
    return Scrape.parse(response.text)


@pytest.fixture
async def metered(make_client: ClientFactory) -> WebhookClient:
    """An app that serves /metrics (and /v1 with an API token of its own)."""
    return await make_client(metrics_token=METRICS_TOKEN, api_tokens=[API_TOKEN])
