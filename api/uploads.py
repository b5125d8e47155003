"""Streams a multipart upload straight to a staging file: never held whole in memory, stopped at the size limit."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from services.errors import InvalidDataset, PayloadTooLarge
from services.usecases.datasets import ReceivedFile

MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 32


class _Receiver:
    """Callbacks for python-multipart: the `file` part goes to disk, other parts are small text fields."""

    def __init__(self, target: Path, max_bytes: int) -> None:
        self.target, self.max_bytes = target, max_bytes
        self.fields: dict[str, str] = {}
        self.filename = ""
        self.sha = hashlib.sha256()
        self.size = 0
        self.file: Any = None
        self._header_field = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._value = bytearray()
        self.complete = False  # the closing boundary was seen

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._part_begin, "on_part_data": self._part_data, "on_part_end": self._part_end,
            "on_header_field": lambda d, s, e: setattr(self, "_header_field", self._header_field + d[s:e]),
            "on_header_value": self._header_value, "on_header_end": lambda: setattr(self, "_header_field", b""),
            "on_headers_finished": self._headers_finished, "on_end": lambda: setattr(self, "complete", True),
        }  # fmt: skip

    def _part_begin(self) -> None:
        self._headers, self._name, self._value = {}, None, bytearray()

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        key = self._header_field.lower()
        self._headers[key] = self._headers.get(key, b"") + data[start:end]

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = params.get(b"name", b"").decode("utf-8", "replace")
        if self._name == "file":
            if self.file is not None:
                raise InvalidDataset("the form has two 'file' parts: send one file per upload", field="file")
            self.filename = os.path.basename(params.get(b"filename", b"").decode("utf-8", "replace"))
            self.file = open(self.target, "wb")
        elif len(self.fields) >= MAX_FIELDS:
            raise InvalidDataset(f"the form has more than {MAX_FIELDS} fields", field=self._name)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._name == "file":
            self.size += len(chunk)
            if self.size > self.max_bytes:
                raise PayloadTooLarge(f"the upload is larger than the limit of {self.max_bytes // 2**20} MB", field="file")
            self.sha.update(chunk)
            self.file.write(chunk)
        else:
            self._value += chunk
            if len(self._value) > MAX_FIELD_BYTES:
                raise InvalidDataset(f"form field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes", field=self._name)

    def _part_end(self) -> None:
        if self._name == "file":
            self.file.close()
        elif self._name:
            self.fields[self._name] = self._value.decode("utf-8", "replace")


async def receive_upload(request: Request, *, target: Path, max_bytes: int) -> tuple[ReceivedFile, dict[str, str]]:
    """The `file` part written to `target`, and the other form fields. Removes `target` on any failure."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise InvalidDataset("send the dataset as multipart/form-data with a 'file' part", field="file")
    length = request.headers.get("content-length") or "0"
    declared = int(length) if length.isdigit() else 0
    if declared > max_bytes + MAX_FIELD_BYTES * 8:  # refuse before reading a byte
        raise PayloadTooLarge(f"the upload is larger than the limit of {max_bytes // 2**20} MB", field="file")
    receiver = _Receiver(target, max_bytes)
    parser = MultipartParser(params[b"boundary"], receiver.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as err:
        if receiver.file is not None:
            receiver.file.close()
        target.unlink(missing_ok=True)
        raise InvalidDataset(f"the multipart body does not follow its declared boundary: {err}", field="file") from None
    try:
        if receiver.file is None:
            raise InvalidDataset("the form has no 'file' part: attach the dataset file as 'file'", field="file")
        if not receiver.complete or not receiver.file.closed:
            raise InvalidDataset("the upload was cut short: the multipart body has no closing boundary", field="file")
    except BaseException:
        if receiver.file is not None:
            receiver.file.close()
        target.unlink(missing_ok=True)
        raise
    return ReceivedFile(target, receiver.filename, receiver.sha.hexdigest(), receiver.size), receiver.fields
