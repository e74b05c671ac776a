"""The service's logging: one configuration for every logger of the process (ours, uvicorn's,
Alembic's), as one readable line (LOG_FORMAT=text) or one JSON object per line (json), each
with the id of the request it belongs to.

The standard library's logging throughout, so uvicorn and the libraries need no adapter, and
python-json-logger's orjson formatter for the JSON. `logging_config` is the whole
configuration as a `dictConfig` document: `trackhook serve` hands it to uvicorn (which
applies it in every worker before the app starts), and the app's lifespan applies it again
with its own settings (`configure_logging`), so plain uvicorn and the tests' apps log alike.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.orjson import OrjsonFormatter

from app.core.config import LogFormat

# The id of the request being served (app.server.request_id binds it), on every line.
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)

HANDLER_NAME = "trackhook"
# uvicorn's loggers: the server's messages ("uvicorn.error"), one line per answer
# ("uvicorn.access"), and the ASGI messages of --log-level trace ("uvicorn.asgi").
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
# Record attributes that are not the line's own fields: the standard ones, uvicorn's
# coloured copy of its message, and the request id (placed by the formatters themselves).
_NOT_FIELDS = frozenset(
    {*RESERVED_ATTRS, *logging.makeLogRecord({}).__dict__, "message", "color_message", "request_id"}
)


def level_number(name: str) -> int:
    """`INFO`, `warning`, ... as the logging module's number."""
    number = logging.getLevelName(name.strip().upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {name!r}")
    return number


class RequestIdFilter(logging.Filter):
    """Puts the current request's id (None outside a request) on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(OrjsonFormatter):
    """`{"time", "level", "logger", "message", "request_id", ...the record's extra fields}`.

    uvicorn's access line also gets its parts as fields (client, method, path, status)."""

    def __init__(self) -> None:
        super().__init__(
            ["levelname", "name", "message", "request_id"],
            rename_fields={"levelname": "level", "name": "logger"},
            reserved_attrs=sorted(_NOT_FIELDS),
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["time"] = datetime.fromtimestamp(record.created, UTC)
        super().add_fields(log_data, record, message_dict)
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            if len(record.args) == 5:  # client, method, path (and query), HTTP version, status
                client, method, path, _version, status = record.args
                log_data.update(client=client, method=method, path=path, status=status)


class TextFormatter(logging.Formatter):
    """`LEVEL logger: message key=value ...`: the record's extra fields that have a value,
    then the request id, so that development output stays one readable line."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        pairs = [
            f"{key}={_text_value(value)}"
            for key, value in record.__dict__.items()
            if key not in _NOT_FIELDS and value is not None
        ]
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            pairs.append(f"request_id={request_id}")
        return f"{line} {' '.join(pairs)}" if pairs else line


def _text_value(value: object) -> str:
    text = str(value)
    # A value that could pass for another field or line is quoted.
    return text if text.isprintable() and " " not in text and text else repr(text)


class StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to `sys.stderr` as it is when the line is written (tests swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def logging_config(
    level: str,
    log_format: LogFormat,
    *,
    server_level: int | None = None,
    access_log: bool = True,
) -> dict[str, Any]:
    """The process's logging as a `dictConfig` document: every logger through one handler
    on stderr; LOG_LEVEL for all, and for uvicorn's loggers `server_level` when stricter."""
    root_level = level_number(level)
    server = max(root_level, server_level or logging.NOTSET)
    formatter = JsonFormatter if log_format is LogFormat.JSON else TextFormatter
    server_loggers = {
        name: {"level": server, "handlers": [], "propagate": True} for name in SERVER_LOGGERS
    }
    # Off (ACCESS_LOG=false, or a level above its INFO lines): no handler anywhere up the
    # chain, so uvicorn does not even gather the line's parts (it checks `hasHandlers()`).
    server_loggers["uvicorn.access"]["propagate"] = access_log and server <= logging.INFO
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"line": {"()": formatter}},
        "handlers": {
            HANDLER_NAME: {"()": StderrHandler, "formatter": "line", "filters": ["request_id"]}
        },
        "loggers": {
            **server_loggers,
            # /readyz reads the schema's revision through Alembic, which says "Context impl"
            # and "Will assume transactional DDL" at INFO each time; the service migrates
            # nothing (`trackhook migrate` does), so Alembic's INFO lines are never its own.
            "alembic.runtime.migration": {"level": max(root_level, logging.WARNING)},
            # At DEBUG aiosqlite logs every statement with its parameters (whole payloads).
            "aiosqlite": {"level": max(root_level, logging.INFO)},
        },
        "root": {"level": root_level, "handlers": [HANDLER_NAME]},
    }


def configure_logging(level: str, log_format: LogFormat, *, access_log: bool = True) -> None:
    """Apply `logging_config` in this process (the app's lifespan).

    What the server chose for its loggers holds when it is stricter: their level
    (`trackhook serve --log-level`, or plain uvicorn's), and an access log it turned off
    (`--no-access-log`). Handlers on the root logger that are not ours (a test runner's)
    are kept; ours is replaced."""
    server_level = max(logging.getLogger(name).level for name in SERVER_LOGGERS)
    access = logging.getLogger("uvicorn.access")
    access_log = access_log and (access.propagate or bool(access.handlers))
    root = logging.getLogger()
    foreign = [handler for handler in root.handlers if handler.get_name() != HANDLER_NAME]
    logging.config.dictConfig(
        logging_config(level, log_format, server_level=server_level, access_log=access_log)
    )
    for handler in foreign:
        root.addHandler(handler)
