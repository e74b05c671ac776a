"""The shutdown guard's last resort: whatever the app's own shutdown waits on (a database
that no longer answers, say), the process is gone by GRACEFUL_TIMEOUT_SECONDS."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import httpx

from tests.support.server import PROJECT_ROOT, free_port

GRACEFUL_TIMEOUT_SECONDS = 2
EXIT_SLACK_SECONDS = 0.5

# An app whose lifespan shutdown never ends, wearing the guard, served by plain uvicorn.
STUCK_APP = textwrap.dedent(
    """
    import asyncio, sys
    import uvicorn
    from app.server.shutdown import ShutdownGuard

    async def stuck(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await asyncio.sleep(3600)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"up"})

    config = uvicorn.Config(
        ShutdownGuard(stuck), port=int(sys.argv[1]), log_level="warning",
        timeout_graceful_shutdown=int(sys.argv[2]),
    )
    uvicorn.Server(config).run()
    """
)


async def test_the_process_is_gone_by_the_graceful_timeout_even_when_its_shutdown_hangs() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", STUCK_APP, str(port), str(GRACEFUL_TIMEOUT_SECONDS)],
        cwd=PROJECT_ROOT,
        env={**os.environ, "GRACEFUL_TIMEOUT_SECONDS": str(GRACEFUL_TIMEOUT_SECONDS)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient(timeout=1) as client:
            for _ in range(200):
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/")).status_code == 200:
                        break
                except httpx.HTTPError:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("the stuck app never came up")
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        try:
            code = await asyncio.to_thread(process.wait, GRACEFUL_TIMEOUT_SECONDS * 5)
        except subprocess.TimeoutExpired:
            code = None
        exited_after = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = process.stdout.read().decode(errors="replace") if process.stdout else ""
    print(f"\nstuck shutdown: exit code {code} {exited_after:.2f} s after SIGTERM")
    assert code is not None, "still running long after the graceful timeout"
    assert exited_after <= GRACEFUL_TIMEOUT_SECONDS + EXIT_SLACK_SECONDS, exited_after
    assert code == 1, output
    assert "exiting now" in output, output
