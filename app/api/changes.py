"""`/v1/changes`: the change feed, as pages (long-poll with `wait`) and as Server-Sent Events.

A consumer that follows `nextCursor` (or the events' ids) from any cursor receives every
recording that changed after it, at least once, in a state at least as new as that change
(ledger/feed.py says why nothing can be skipped)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

import anyio
import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import BaseModel
from sse_starlette import EventSourceResponse, ServerSentEvent

from app.api.auth import require_api_token
from app.api.cursors import decode_feed_cursor, encode_feed_cursor
from app.api.deps import ledger_of, stuck_before
from app.api.documents import RecordingDocument, recording_document
from app.api.params import FilterValue
from app.core.http import FastJSONResponse, documented_errors
from app.ledger.feed import BEGINNING, ChangeFilter, FeedPage, Position
from app.ledger.ledger import Ledger
from app.rules.lifecycle import Kind, Status

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_WAIT_SECONDS = 60.0
# How long a stream waits for a change before it reads again (the stream stays open;
# sse-starlette sends its keep-alive comment every HEARTBEAT_SECONDS meanwhile).
STREAM_WAIT_SECONDS = 30.0
HEARTBEAT_SECONDS = 15
STREAM_PAGE = 500
SHUTDOWN_GRACE_SECONDS = 3.0

router = APIRouter(
    prefix="/v1/changes",
    tags=["changes"],
    dependencies=[Depends(require_api_token)],
    responses=documented_errors(401, 422, 503),
)


class ChangesPage(BaseModel):
    """Recordings in the order of their latest change, oldest first."""

    items: list[RecordingDocument]
    nextCursor: str  # never null: pass it back as `cursor` to continue


CursorParam = Annotated[
    str | None,
    Query(
        max_length=512,
        description="Where to continue: a nextCursor (or event id) of this API; omitted = "
        "from the beginning (every recording, then what changes); `now` = from the current end",
    ),
]


# async, though it awaits nothing: FastAPI runs a plain `def` dependency in its thread pool,
# a hand-off to another thread for every request (a tenth of a worker's CPU at 500/s).
async def change_filter(
    meetingId: FilterValue = None,
    sessionId: FilterValue = None,
    participantId: FilterValue = None,
    kind: Kind | None = None,
    status: Annotated[list[Status] | None, Query()] = None,
) -> ChangeFilter:
    return ChangeFilter(
        meeting_id=meetingId,
        session_id=sessionId,
        participant_id=participantId,
        kind=kind,
        statuses=frozenset(s.value for s in status or ()),
    )


FilterDep = Annotated[ChangeFilter, Depends(change_filter)]


async def _start(ledger: Ledger, cursor: str | None, field: str) -> Position:
    if cursor is None:
        return BEGINNING
    if cursor == "now":
        return await ledger.feed_end()
    return Position(*decode_feed_cursor(cursor, field))


def _cursor(position: Position) -> str:
    return encode_feed_cursor(position.txn, position.id)


def _page_document(page: FeedPage, stuck_before: datetime) -> dict[str, object]:
    return {
        "items": [recording_document(change.recording, stuck_before) for change in page.changes],
        "nextCursor": _cursor(page.next),
    }


class _EncodedPages:
    """Each page's events encoded once, for every stream it was read for: streams at the
    same position share one read of a page (ledger/shared_pages.py), and encoding an event
    costs more than reading it. The last few pages are kept, by identity (each with the
    page itself, so an id is not reused while it is here)."""

    def __init__(self, keep: int = 64) -> None:
        self._keep = keep
        self._recent: OrderedDict[int, tuple[FeedPage, bytes]] = OrderedDict()

    def events(self, page: FeedPage, now_stuck_before: datetime) -> bytes:
        """A page's events in one write: a send through the server's layers costs more than
        encoding an event, and a wake-up often brings several."""
        held = self._recent.get(id(page))
        if held is not None and held[0] is page:
            return held[1]
        encoded = b"".join(
            ServerSentEvent(
                data=orjson.dumps(
                    recording_document(change.recording, now_stuck_before),
                    option=orjson.OPT_UTC_Z,
                ).decode(),
                event="recording",
                id=_cursor(change.position),
            ).encode()
            for change in page.changes
        )
        self._recent[id(page)] = (page, encoded)
        if len(self._recent) > self._keep:
            self._recent.popitem(last=False)
        return encoded


_ENCODED = _EncodedPages()


@router.get("", response_model=ChangesPage)
async def list_changes(
    request: Request,
    filters: FilterDep,
    cursor: CursorParam = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT_SECONDS,
            description="Seconds to hold the request when nothing matches after the cursor",
        ),
    ] = 0,
) -> FastJSONResponse:
    ledger = ledger_of(request)
    position = await _start(ledger, cursor, "query.cursor")
    page = await ledger.changes(filters, position, limit, wait)
    return FastJSONResponse(_page_document(page, stuck_before(request)))


@router.get(
    "/stream",
    response_class=EventSourceResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "`event: recording`, `id:` the cursor after it, `data:` the recording",
        }
    },
)
async def stream_changes(
    request: Request,
    filters: FilterDep,
    cursor: CursorParam = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=512)] = None,
) -> EventSourceResponse:
    ledger = ledger_of(request)
    if last_event_id is not None:  # a reconnecting client resumes exactly there
        position = await _start(ledger, last_event_id, "header.Last-Event-ID")
    else:
        position = await _start(ledger, cursor, "query.cursor")

    async def events() -> AsyncIterator[bytes]:
        async for page in ledger.follow(filters, position, STREAM_PAGE, STREAM_WAIT_SECONDS):
            yield _ENCODED.events(page, stuck_before(request))

    # On shutdown the server closes the stream: the lifespan's drain watch wakes every
    # waiter (ledger.watch.close), the generator returns, the body ends cleanly; the grace
    # period is how long sse-starlette lets it do so before cutting the connection.
    return EventSourceResponse(
        events(),
        ping=HEARTBEAT_SECONDS,
        shutdown_event=anyio.Event(),
        shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
    )
