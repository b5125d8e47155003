"""Logging people can follow: one line per request and per job event, as JSON or as readable text."""

from __future__ import annotations

import json
import logging
import sys
import time
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
        return f"{text} [{extras}]" if extras else text


def configure_logging(*, level: str, json_lines: bool) -> None:
    """Root logging for an entrypoint: JSON lines when `json_lines`, readable text otherwise.

    Written from the calling thread: a background writer thread was tried and made requests slower,
    as it competes for the GIL with the thread that waits on onnxruntime.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    # No line lists a source file, so skip the stack walk logging does for every record to find one.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logProcesses = logging.logThreads = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class RequestLog:
    """One line per HTTP request, written straight to stderr in the configured format.

    It bypasses the logging machinery, which costs ~10 us a record (a record object, a lock, a
    formatter) against ~2 us here: on a sub-millisecond predict that difference shows.
    """

    def __init__(self, *, json_lines: bool) -> None:
        self.json_lines = json_lines
        self.enabled = logging.getLogger("kiln.request").isEnabledFor(logging.INFO)
        self._second, self._stamp = -1, ""

    def _time(self, now: float) -> str:
        if int(now) != self._second:  # formatted once a second
            self._second = int(now)
            self._stamp = datetime.fromtimestamp(self._second, UTC).isoformat(timespec="seconds")
        return self._stamp

    def write(self, *, request_id: str, method: str, route: str, status: int, seconds: float) -> None:
        if not self.enabled:
            return
        ms = round(seconds * 1e3, 3)
        stamp = self._time(time.time())
        if self.json_lines:
            fields = {"time": stamp, "level": "INFO", "logger": "kiln.request", "message": f"{method} {route} {status} {ms:.1f} ms",
                      "request_id": request_id, "method": method, "route": route, "status": status, "duration_ms": ms}  # fmt: skip
            line = json.dumps(fields)
        else:
            line = f"{stamp} INFO kiln.request: {method} {route} {status} {ms:.1f} ms [request_id={request_id}]"
        sys.stderr.write(line + "\n")
