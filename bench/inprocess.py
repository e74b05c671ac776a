"""The CPU one webhook costs the service, without the network, the server or a load
generator: the ASGI app is called directly, in this process, with signed deliveries of
distinct tracks (each track's four lifecycle events, one stage after another), 64 in
flight, and the process CPU per webhook is printed.

    DATABASE_URL=postgresql+asyncpg://... python -m bench.inprocess [--webhooks N]
        [--profile FILE]

The database must be migrated and is written to. Another commit's tree is measured the
same way from that tree (`cd TREE && PYTHONPATH=TREE python -m bench.inprocess`, or with
this file copied there): the figures of two commits compare when taken in one sitting.
`--profile` writes a cProfile of the measured part (`python -m pstats FILE`).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import time
from typing import Any

import orjson

from tests.support.payloads import track_webhook
from tests.support.signing import Signer

STAGES = ("starting", "started", "stopping", "stopped")
IN_FLIGHT = 64


def scope_of(body: bytes, signature: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/webhooks/videosdk",
        "raw_path": b"/webhooks/videosdk",
        "root_path": "",
        "query_string": b"",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 5000),
        "headers": [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"videosdk-signature", signature.encode()),
        ],
        "state": {},
    }


async def measure(webhooks: int, profile_path: str | None) -> None:
    signer = Signer.generate()
    os.environ.update(
        VIDEOSDK_PUBLIC_KEY=signer.public_pem,
        WEBHOOK_SIGNATURE="required",
        API_TOKENS="bench-" + "x" * 40,
        LOG_LEVEL="WARNING",
    )
    from app.main import app  # after the environment is set: settings are read at import

    def signed(n: int, stage: str) -> tuple[bytes, str]:
        body = orjson.dumps(track_webhook(stage, session_id=f"inprocess-{n}"))
        return body, signer.sign(body)

    async def post(body: bytes, signature: str) -> int:
        received = False
        status = 0

        async def receive() -> dict[str, Any]:
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client never goes away
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(scope_of(body, signature), receive, send)
        return status

    in_flight = asyncio.Semaphore(IN_FLIGHT)

    async def one(delivery: tuple[bytes, str]) -> int:
        async with in_flight:
            return await post(*delivery)

    per_stage = webhooks // len(STAGES)
    stages = [[signed(n, stage) for n in range(per_stage)] for stage in STAGES]
    warm = [signed(10**7 + n, "starting") for n in range(4 * IN_FLIGHT)]
    async with app.router.lifespan_context(app):
        await asyncio.gather(*(one(delivery) for delivery in warm))
        profile = cProfile.Profile() if profile_path else None
        cpu, wall = time.process_time(), time.monotonic()
        if profile is not None:
            profile.enable()
        for deliveries in stages:
            statuses = await asyncio.gather(*(one(delivery) for delivery in deliveries))
            if set(statuses) != {200}:
                raise SystemExit(f"not every webhook was answered 200: {set(statuses)}")
        if profile is not None:
            profile.disable()
            profile.dump_stats(profile_path)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    total = per_stage * len(STAGES)
    print(f"{total} webhooks: {cpu / total * 1e6:.0f} us of CPU each, {total / wall:,.0f}/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--webhooks", type=int, default=6400)
    parser.add_argument("--profile", metavar="FILE")
    args = parser.parse_args()
    asyncio.run(measure(args.webhooks, args.profile))


if __name__ == "__main__":
    main()
