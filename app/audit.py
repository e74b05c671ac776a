"""`trackhook verify-log`: check every logged delivery's signature again, against the key(s)
the service is configured with, over the body exactly as it was received."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from app.core.config import Settings
from app.intake.public_key import PublicKeyProvider
from app.intake.signature import SignatureError, signature_bytes, signed_candidates, verify
from app.ledger.audit import logged_bodies
from app.ledger.engine import create_engine

SHOWN = 20  # failing event ids listed in full


@dataclass(slots=True)
class AuditReport:
    read: int = 0
    verified: int = 0
    failed: list[int] = field(default_factory=list)
    unsigned: int = 0
    without_body: int = 0

    def lines(self) -> list[str]:
        shown = ", ".join(map(str, self.failed[:SHOWN]))
        more = f" and {len(self.failed) - SHOWN} more" if len(self.failed) > SHOWN else ""
        return [
            f"events read: {self.read}",
            f"signature verified: {self.verified}",
            f"signature does not verify: {len(self.failed)}"
            + (f" (event ids {shown}{more})" if self.failed else ""),
            f"no signature header (WEBHOOK_SIGNATURE=off): {self.unsigned}",
            f"no body kept (logged before migration 0004): {self.without_body}",
        ]


async def verify_log(settings: Settings) -> AuditReport:
    """Every delivery checked against the configured keys (VIDEOSDK_PUBLIC_KEY may hold
    several: give the ones that were valid when the deliveries came)."""
    keys = await PublicKeyProvider(settings).get()
    report = AuditReport()
    engine = create_engine(settings)
    try:
        async for logged in logged_bodies(engine):
            report.read += 1
            if logged.body is None:
                report.without_body += 1
            elif logged.signature is None:
                report.unsigned += 1
            else:
                try:
                    signature = signature_bytes(logged.signature)
                    document = orjson.loads(logged.body)
                    verify(keys, signature, signed_candidates(logged.body, document))
                except (SignatureError, orjson.JSONDecodeError):
                    report.failed.append(logged.id)
                else:
                    report.verified += 1
    finally:
        await engine.dispose()
    return report
