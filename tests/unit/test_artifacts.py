"""The artifact store: content-addressed, atomic, and never outside its root."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from services.registry.artifacts import LocalArtifactStore


def test_put_moves_the_file_under_its_hash(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    temp = store.temp_path()
    temp.write_bytes(b"onnx bytes")
    stored = store.put(temp)
    assert stored.sha256 == hashlib.sha256(b"onnx bytes").hexdigest() and stored.size == 10
    assert not temp.exists()
    assert store.read_bytes(stored.sha256) == b"onnx bytes"
    assert store.path_for(stored.sha256).parent.name == stored.sha256[:2]
    store.delete(stored.sha256)
    assert not store.exists(stored.sha256)


def test_temp_files_live_on_the_store_filesystem(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    assert store.temp_path().parent == tmp_path.resolve() / "tmp"


@pytest.mark.parametrize("bad", ["../../etc/passwd", "a" * 63, "A" * 64, "../" + "a" * 61])
def test_only_hex_digests_name_artifacts(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        LocalArtifactStore(tmp_path).path_for(bad)
