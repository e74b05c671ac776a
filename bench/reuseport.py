"""One uvicorn process on its own SO_REUSEPORT listening socket.

Start N of these on one port and the kernel spreads new connections over the N sockets
(by a hash of the 4-tuple), where `uvicorn --workers N` lets whichever process wakes first
accept, so one process can take every keep-alive connection of a load generator.
"""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import uvicorn


class ReadyServer(uvicorn.Server):
    """Writes the ready file once the app's lifespan has started and the socket serves."""

    def __init__(self, config: uvicorn.Config, ready_file: Path) -> None:
        super().__init__(config)
        self._ready_file = ready_file

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._ready_file.write_text("ready\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("app", help="import string, e.g. app.main:app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", default="auto")
    parser.add_argument("--http", default="auto")
    parser.add_argument("--timeout-keep-alive", type=int, default=5)
    parser.add_argument("--backlog", type=int, default=2048)
    parser.add_argument("--ready-file", type=Path, required=True)
    args = parser.parse_args()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((args.host, args.port))
    sock.listen(args.backlog)
    sock.set_inheritable(True)

    config = uvicorn.Config(
        args.app,
        host=args.host,
        port=args.port,
        loop=args.loop,
        http=args.http,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=args.timeout_keep_alive,
        backlog=args.backlog,
    )
    ReadyServer(config, args.ready_file).run(sockets=[sock])


if __name__ == "__main__":
    main()
