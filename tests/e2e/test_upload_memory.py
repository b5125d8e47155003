"""The README: "Uploads are streamed to disk and are never held whole in memory", shown by the API's peak RSS.

A 1 GiB NPZ (just under the default KILN_MAX_UPLOAD_MB of 1024) is made while it is sent, as a
chunked multipart body, so neither side has the file whole. The API process's high-water mark
(VmHWM) must stay far below the file's size.
"""

from __future__ import annotations

import io
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

FEATURES = 256  # float32: a row is 1 KiB
ROWS = 2**20 - 2**14  # x is 1 GiB less 16 MiB; with y (8 MiB) the file stays under the 1024 MB limit
CHUNK_ROWS = 1024  # 1 MiB at a time


class _Sink(io.RawIOBase):
    """An unseekable stream that keeps what zipfile writes until the generator hands it on."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.chunks.append(bytes(data))
        return len(data)

    def drain(self) -> Iterator[bytes]:
        chunks, self.chunks = self.chunks, []
        yield from chunks


def _npz_stream() -> Iterator[bytes]:
    """An uncompressed NPZ with x (ROWS, FEATURES) float32 and y (ROWS,) int64, written piece by piece."""
    sink = _Sink()
    block = np.random.default_rng(0).random((CHUNK_ROWS, FEATURES), dtype=np.float32).tobytes()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (ROWS, FEATURES)})
            member.write(header.getvalue())
            for start in range(0, ROWS, CHUNK_ROWS):
                member.write(block[: (min(ROWS, start + CHUNK_ROWS) - start) * FEATURES * 4])
                yield from sink.drain()
        with archive.open("y.npy", "w") as member:
            np.save(member, np.arange(ROWS, dtype=np.int64) % 2)
    yield from sink.drain()


def _multipart(boundary: str) -> Iterator[bytes]:
    yield (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.npz"\r\n'
           "Content-Type: application/octet-stream\r\n\r\n").encode()  # fmt: skip
    yield from _npz_stream()
    yield f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nbig upload\r\n--{boundary}--\r\n'.encode()


def _status_kib(pid: int, field: str) -> int:
    line = next(li for li in Path(f"/proc/{pid}/status").read_text().splitlines() if li.startswith(f"{field}:"))
    return int(line.split()[1])


def test_a_1_gib_upload_streams_through_the_api_without_being_held_in_memory(kiln: dict) -> None:
    pid, boundary = kiln["api"].pid, uuid.uuid4().hex
    rss_before_mib = _status_kib(pid, "VmRSS") / 1024
    with httpx.Client(base_url=kiln["url"], headers=kiln["headers"], timeout=600) as client:
        response = client.post("/v1/datasets", content=_multipart(boundary),
                               headers={"content-type": f"multipart/form-data; boundary={boundary}"})  # fmt: skip
        peak_mib = _status_kib(pid, "VmHWM") / 1024
        assert response.status_code == 201, response.text
        dataset = response.json()
        try:
            assert dataset["n_samples"] == ROWS and dataset["feature_shape"] == [FEATURES]
            assert dataset["size"] > 2**30 - 2**25  # the whole gibibyte arrived
        finally:
            assert client.delete(f"/v1/datasets/{dataset['id']}").status_code == 204  # and its gibibyte leaves the disk
    print(f"\n[upload] API RSS before {rss_before_mib:.0f} MiB, peak after a 1 GiB upload {peak_mib:.0f} MiB")
    assert peak_mib - rss_before_mib < 256  # far below the 1024 MiB it would take to hold the file
    staging = kiln["data_dir"] / "datasets" / ".staging"
    assert not staging.exists() or not any(staging.iterdir())  # the staged upload is gone too
    assert not (kiln["data_dir"] / "datasets" / dataset["id"]).exists()
