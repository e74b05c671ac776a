"""Readers that hammer one read endpoint, in a process of their own, as other clients would:

    python -m tests.support.read_flood BASE_URL PATH READERS PARAMS_JSON

Each reader asks again as soon as it has its answer. They run until a line arrives on
stdin; then the process prints how the reads were answered (status code, or the transport
error's name) as one JSON object.

A process, not a thread of the test: a thread's readers shared the test's interpreter lock,
and under coverage their parsing of 500-event pages kept the test's webhook sender from
reading an answer for seconds, past the server's keep-alive (CI: httpx.ReadError on the
sender's next webhook, on a connection the server had closed as idle).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter

import httpx


async def flood(base_url: str, path: str, readers: int, params: list[list[str]]) -> Counter[str]:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), stop.set)
    statuses: Counter[str] = Counter()

    async def reader(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            try:
                response = await http.get(path, params=[(name, value) for name, value in params])
            except httpx.TransportError as exc:
                # A kept-alive connection the server closed as this reader reused it (the
                # keep-alive race of any client). The read is idempotent: ask again.
                statuses[type(exc).__name__] += 1
                continue
            statuses[str(response.status_code)] += 1

    limits = httpx.Limits(max_connections=readers)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as http:
        await asyncio.gather(*(reader(http) for _ in range(readers)))
    return statuses


def main() -> None:
    base_url, path, readers, params = sys.argv[1:5]
    statuses = asyncio.run(flood(base_url, path, int(readers), json.loads(params)))
    print(json.dumps(statuses), flush=True)


if __name__ == "__main__":
    main()
