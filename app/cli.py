"""`trackhook` console command: serve, migrate, and developer helpers for signing."""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from app.core.config import Settings
from app.core.migrations import upgrade_to_head


def _migrate(_args: argparse.Namespace) -> int:
    settings = Settings()
    upgrade_to_head(settings.database_url)
    print(f"migrated {settings.database_url.split('@')[-1]} to head", file=sys.stderr)
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    if not args.no_migrate:
        _migrate(args)
    uvicorn.run(
        "app.main:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        proxy_headers=True,
        timeout_graceful_shutdown=args.graceful_timeout,
    )
    return 0


def _keygen(args: argparse.Namespace) -> int:
    """A development key pair, to sign webhooks the way VideoSDK does."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = Path(args.private)
    public = Path(args.public)
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    private.chmod(0o600)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    print(f"wrote {private} and {public}", file=sys.stderr)
    return 0


def _sign(args: argparse.Namespace) -> int:
    """Print the videosdk-signature header value for a body file (or stdin)."""
    loaded = serialization.load_pem_private_key(Path(args.key).read_bytes(), password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        print("the key is not an RSA private key", file=sys.stderr)
        return 2
    body = sys.stdin.buffer.read() if args.body == "-" else Path(args.body).read_bytes()
    signature = loaded.sign(body, padding.PKCS1v15(), hashes.SHA256())
    print(base64.b64encode(signature).decode())
    return 0


def _rebuild(args: argparse.Namespace) -> int:
    """Recompute the recordings from the event log; exit 1 on differences left unrepaired."""
    import asyncio

    from app.core.db import create_engine, create_session_factory
    from app.recordings.rebuild import RebuildReport, rebuild

    async def run() -> RebuildReport:
        engine = create_engine(Settings())
        try:
            async with create_session_factory(engine)() as session:
                return await rebuild(session, repair=args.repair)
        finally:
            await engine.dispose()

    report = asyncio.run(run())
    print("\n".join(report.lines()))
    return 1 if report.differences and not args.repair else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trackhook", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="migrate the database, then serve HTTP")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--graceful-timeout", type=int, default=30, help="seconds for SIGTERM")
    serve.add_argument("--no-migrate", action="store_true", help="skip `alembic upgrade head`")
    serve.set_defaults(handler=_serve)

    migrate = commands.add_parser("migrate", help="alembic upgrade head on DATABASE_URL")
    migrate.set_defaults(handler=_migrate)

    keygen = commands.add_parser("keygen", help="write a development RSA key pair")
    keygen.add_argument("--private", default="dev-private.pem")
    keygen.add_argument("--public", default="dev-public.pem")
    keygen.set_defaults(handler=_keygen)

    sign = commands.add_parser("sign", help="print the signature header for a body")
    sign.add_argument("body", help="file with the exact body bytes, or - for stdin")
    sign.add_argument("--key", default="dev-private.pem")
    sign.set_defaults(handler=_sign)

    rebuild = commands.add_parser(
        "rebuild", help="recompute every recording from the event log and report differences"
    )
    rebuild.add_argument(
        "--repair", action="store_true", help="rewrite the differing recordings from the log"
    )
    rebuild.set_defaults(handler=_rebuild)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = args.handler
    result: int = handler(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
