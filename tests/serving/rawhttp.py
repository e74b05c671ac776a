"""Raw HTTP/1.1 exchanges, for what httpx will not send (malformed requests, slow bodies)
and for probes that must not spend time setting a client up."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import orjson


@dataclass(frozen=True)
class RawAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key == name]
        return values[0] if values else None

    def names(self) -> set[str]:
        return {key for key, _value in self.headers}

    def json(self) -> object:
        return orjson.loads(self.body)


def parse_answer(raw: bytes) -> RawAnswer:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    return RawAnswer(int(status_line.split()[1]), headers, body)


async def exchange(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    """Send `request` on a new connection; everything the server sent until it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def request_bytes(
    method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: trackhook.test"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def read_answer(reader: asyncio.StreamReader) -> RawAnswer:
    """One answer (head and Content-Length body) off a kept-alive connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    answer = parse_answer(head)
    body = await reader.readexactly(int(answer.header("content-length") or 0))
    return RawAnswer(answer.status, answer.headers, body)
