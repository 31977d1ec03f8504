"""Structured JSON logs, one object per line, each carrying the current request's id."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import Any

import orjson

request_id_var: ContextVar[str | None] = ContextVar("portico_request_id", default=None)

_base_factory = logging.getLogRecordFactory()


def _record_with_request_id(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    record.request_id = request_id_var.get()
    return record


def stamp_request_ids() -> None:
    """Every log record made while a request is handled carries its id (set when the record is made, so
    handlers that format later, in another thread or task, still see it). Idempotent."""
    logging.setLogRecordFactory(_record_with_request_id)


# Libraries whose records hold request content or secrets, and the least severe level they log at: aiosqlite
# logs every SQL statement with its parameters at DEBUG (prompts, stored answers, webhook secrets), httpx every
# URL it calls at INFO (a webhook URL may carry its receiver's token). Portico logs what it needs of their work.
QUIETED_LIBRARIES = {"aiosqlite": logging.INFO, "httpx": logging.WARNING}

# Attributes every LogRecord has; anything else was passed with `extra=` and goes into the JSON object.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and v is not None})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name, quietest in QUIETED_LIBRARIES.items():
        logging.getLogger(name).setLevel(max(root.level, quietest))
    # Our own middleware writes the access log (with request ids); uvicorn's would duplicate it.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
