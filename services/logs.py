"""Logging people can follow: one line per request and per job event, as JSON or as readable text."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

# Fields callers pass with `extra=`; they become keys of the JSON line (or key=value pairs in text).
FIELDS = ("request_id", "method", "route", "status", "duration_ms", "job_id", "epoch", "loss", "val_loss", "state", "version")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"), "level": record.levelname,
                "logger": record.name, "message": record.getMessage()}  # fmt: skip
        line |= {field: getattr(record, field) for field in FIELDS if getattr(record, field, None) is not None}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{field}={getattr(record, field)}" for field in FIELDS if getattr(record, field, None) is not None)
        text = super().format(record)
        return f"{text} [{extras}]" if extras and "request_id" in extras else text


def configure_logging(*, level: str, json_lines: bool) -> None:
    """Root logging for an entrypoint: JSON lines when `json_lines`, readable text otherwise.

    Written from the calling thread: a background writer thread was tried and made requests slower,
    as it competes for the GIL with the thread that waits on onnxruntime.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
