"""The seam after commit: every committed delivery, whatever path wrote it, comes back here
as one `Committed`, and features that react to changes (a change feed, notifications,
metrics) subscribe here instead of being threaded through the writers.

Listeners are called after the commit and after the waiting requests have been handed
their answers (`loop.call_soon`), with each batch the writers committed together. They
must return quickly and never raise; slow work belongs in a task of their own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from app.ledger.plan import Delivery
from app.rules.lifecycle import Outcome, RecordingState

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Committed:
    """One delivery, as committed: what intake answers, and what the seam announces."""

    delivery: Delivery
    outcome: Outcome
    event_id: int
    recording_id: int | None
    before: RecordingState | None = None  # an applied event's recording before it (None: opened)
    after: RecordingState | None = None  # and after it (None unless applied)
    txn: int | None = None  # the committing transaction's number (ledger/clock.py), if it changed

    @property
    def changed(self) -> bool:
        return self.outcome is Outcome.APPLIED


Listener = Callable[[Sequence[Committed]], None]


class AfterCommit:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def publish(self, batch: Sequence[Committed]) -> None:
        """Called by a writer once `batch` is committed."""
        if not self._listeners or not batch:
            return
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            loop.call_soon(self._call, listener, batch)

    @staticmethod
    def _call(listener: Listener, batch: Sequence[Committed]) -> None:
        try:
            listener(batch)
        except Exception:  # a listener's bug must not reach the writers
            logger.exception("after-commit listener %r failed", listener)
