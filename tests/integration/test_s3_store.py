"""The S3 stores against a real S3 server (SeaweedFS' `weed mini`): atomic, conditional writes, checked ranged reads, a
bounded cache by hash, and what a server that goes away mid-upload leaves behind (nothing)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from services.data.s3_store import MANIFEST, S3DatasetStore
from services.errors import KilnError
from services.registry.s3 import ArtifactCorrupt, S3Location, S3Objects, StoreUnavailable, s3_client
from services.registry.s3_artifacts import S3ArtifactStore, S3Checkpoints
from tests.s3_server import WeedServer

MiB = 1 << 20


@pytest.fixture
def objects(s3_server: WeedServer, monkeypatch: pytest.MonkeyPatch) -> S3Objects:
    return objects_on(s3_server, monkeypatch)


def objects_on(server: WeedServer, monkeypatch: pytest.MonkeyPatch, **options: int) -> S3Objects:
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    location = S3Location.parse(f"s3://{server.new_bucket()}/kiln/test")
    return S3Objects(s3_client(server.endpoint), location, **options)


def host(objects: S3Objects, root: Path, cache_bytes: int = 1 << 30) -> S3ArtifactStore:
    """One host's view of the store: the bucket every host shares, and a local cache of its own."""
    return S3ArtifactStore(objects, root, cache_bytes=cache_bytes)


def written(store: S3ArtifactStore, data: bytes) -> str:
    temp = store.temp_path()
    temp.write_bytes(data)
    return store.put(temp).sha256


def requests_to(objects: S3Objects, operation: str) -> list[dict[str, Any]]:
    """Every `operation` request the client sends from now on, as its parameters."""
    seen: list[dict[str, Any]] = []
    objects.client.meta.events.register(f"provide-client-params.s3.{operation}", lambda params, **_: seen.append(dict(params)))
    return seen


def test_parsing_the_artifact_url() -> None:
    assert S3Location.parse("s3://kiln-artifacts") == S3Location("kiln-artifacts", "")
    assert S3Location.parse("s3://kiln-artifacts/a/b/") == S3Location("kiln-artifacts", "a/b/")
    for bad in ("kiln-artifacts/a", "s3://", "s3://UPPER/a", "file:///tmp"):
        with pytest.raises(ValueError):
            S3Location.parse(bad)


def test_an_artifact_is_stored_under_its_hash_and_read_back_checked_on_another_host(objects: S3Objects, tmp_path: Path) -> None:
    writer, reader = host(objects, tmp_path / "a"), host(objects, tmp_path / "b")
    sha256 = written(writer, b"onnx bytes" * 1000)
    key = objects.key("artifacts", sha256[:2], f"{sha256}.onnx")
    assert objects.keys(objects.key("artifacts")) == [key]
    assert objects.head(key)["Metadata"] == {"sha256": sha256}  # type: ignore[index]
    assert not list((writer.cache / "tmp").iterdir())  # the temp file became the writer's cached copy

    gets = requests_to(objects, "GetObject")
    assert reader.read_bytes(sha256) == b"onnx bytes" * 1000 and len(gets) == 1
    assert reader.path_for(sha256).read_bytes() == b"onnx bytes" * 1000 and len(gets) == 1  # then from the cache
    puts = requests_to(objects, "PutObject")
    assert written(reader, b"onnx bytes" * 1000) == sha256 and puts == []  # already there: nothing sent again
    assert reader.exists(sha256)
    reader.delete(sha256)
    assert not writer.exists(sha256.replace(sha256[-1], "0" if sha256[-1] != "0" else "1"))
    assert objects.keys(objects.key("artifacts")) == [] and not reader._cached(sha256).exists()


def test_a_content_addressed_write_is_conditional(objects: S3Objects, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host that finds no object and writes it while another host does: the store refuses the second write (its
    If-None-Match), and that is not an error, the object being the same file."""
    key = objects.key("artifacts", "race")
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_bytes(b"written first")
    second.write_bytes(b"written second")  # different bytes only to show which write the store kept
    objects.put_file(first, key, sha256="x")
    monkeypatch.setattr(objects, "head", lambda key: None)  # as if the other write landed just after this host looked
    puts = requests_to(objects, "PutObject")
    objects.put_file(second, key, sha256="x")
    assert puts and puts[0]["IfNoneMatch"] == "*"
    body = objects.client.get_object(Bucket=objects.location.bucket, Key=key)["Body"].read()
    assert body == b"written first"


def test_large_files_go_up_in_parts_and_come_down_in_ranges(s3_server: WeedServer, monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:  # fmt: skip
    objects = objects_on(s3_server, monkeypatch, part_bytes=5 * MiB, chunk_bytes=MiB)
    data = os.urandom(12 * MiB + 5)
    parts, completions = requests_to(objects, "UploadPart"), requests_to(objects, "CompleteMultipartUpload")
    sha256 = written(host(objects, tmp_path / "a"), data)
    assert [p["PartNumber"] for p in parts] == [1, 2, 3] and completions[0]["IfNoneMatch"] == "*"
    gets = requests_to(objects, "GetObject")
    assert host(objects, tmp_path / "b").read_bytes(sha256) == data
    assert [g["Range"] for g in gets][:2] == ["bytes=0-1048575", "bytes=1048576-2097151"] and len(gets) == 13


def test_bytes_that_do_not_match_their_hash_are_refused(objects: S3Objects, tmp_path: Path) -> None:
    sha256 = written(host(objects, tmp_path / "a"), b"the real model")
    key = objects.key("artifacts", sha256[:2], f"{sha256}.onnx")
    objects.client.put_object(Bucket=objects.location.bucket, Key=key, Body=b"something else", Metadata={"sha256": sha256})
    reader = host(objects, tmp_path / "b")
    with pytest.raises(ArtifactCorrupt, match=sha256):
        reader.path_for(sha256)
    assert [p for p in reader.cache.rglob("*") if p.is_file()] == []  # nothing unchecked is kept


def test_the_cache_is_bounded_and_keeps_what_was_used_last(objects: S3Objects, tmp_path: Path) -> None:
    writer = host(objects, tmp_path / "a")
    a, b, c = (written(writer, bytes([n]) * 1000) for n in range(3))
    reader = host(objects, tmp_path / "b", cache_bytes=2500)
    for sha256 in (a, b, a, c):  # a used again after b: b is the least recently used when c arrives
        reader.path_for(sha256)
        os.utime(reader._cached(sha256), (0, len(list(reader.cache.rglob("*")))))  # distinct mtimes, in order of use
    assert {p.name for p in reader.cache.glob("??/*")} == {a, c}
    assert reader.read_bytes(b) == bytes([1]) * 1000  # fetched again when asked for


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[WeedServer]:
    """A server this test may kill."""
    server = WeedServer(tmp_path / "s3")
    server.start()
    yield server
    server.stop()


def kill_during(objects: S3Objects, server: WeedServer, operation: str, *, when: Callable[[dict[str, Any]], bool]) -> None:
    """SIGKILL the server, once, as the client is about to send an `operation` request that `when` picks."""
    done: list[bool] = []

    def maybe_kill(params: dict[str, Any], **_: Any) -> None:
        if not done and when(params):
            done.append(True)
            server.kill()

    objects.client.meta.events.register(f"provide-client-params.s3.{operation}", maybe_kill)


def test_a_server_killed_mid_upload_leaves_no_object(own_server: WeedServer, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:  # fmt: skip
    objects = objects_on(own_server, monkeypatch, part_bytes=5 * MiB)
    store = host(objects, tmp_path / "a")
    kill_during(objects, own_server, "UploadPart", when=lambda params: params["PartNumber"] == 2)
    temp = store.temp_path()
    temp.write_bytes(os.urandom(11 * MiB))
    with pytest.raises(StoreUnavailable, match="artifact store could not"):
        store.put(temp)
    assert temp.exists()  # the caller still holds its file (and removes it): nothing was moved into the cache
    assert [p for p in store.cache.glob("??/*")] == []
    own_server.start()
    assert own_server.keys(objects.location.bucket) == []  # the parts never became an object


def test_a_dataset_is_uploaded_with_its_manifest_last_and_fetched_whole_on_another_host(objects: S3Objects,
                                                                                        tmp_path: Path) -> None:  # fmt: skip
    api, worker = S3DatasetStore(tmp_path / "api", objects), S3DatasetStore(tmp_path / "worker", objects)
    staged = api.staging()
    (staged / "x.npy").write_bytes(os.urandom(3 * MiB))
    (staged / "y.npy").write_bytes(b"labels")
    dataset_id = uuid.uuid4()
    puts = requests_to(objects, "PutObject")
    api.commit(staged, dataset_id)
    assert puts[-1]["Key"].endswith(f"{dataset_id}/{MANIFEST}")  # the manifest makes it exist: written last
    assert not staged.exists() and (api.folder(dataset_id) / "y.npy").read_bytes() == b"labels"

    objects.chunk_bytes = MiB
    gets = requests_to(objects, "GetObject")
    folder = worker.folder(dataset_id)
    assert (folder / "x.npy").read_bytes() == (api.folder(dataset_id) / "x.npy").read_bytes()
    assert sum(1 for g in gets if g["Key"].endswith("x.npy")) == 3  # streamed in 1 MiB ranges
    assert sorted(p.name for p in folder.iterdir()) == ["x.npy", "y.npy"]

    worker.remove(folder)  # a dataset's folder: removed from S3 too, manifest first
    assert objects.keys(objects.key("datasets")) == []
    with pytest.raises(KilnError, match="no files in the artifact store"):
        S3DatasetStore(tmp_path / "third", objects).folder(dataset_id)


def test_a_dataset_whose_manifest_names_a_tampered_file_is_refused(objects: S3Objects, tmp_path: Path) -> None:
    api = S3DatasetStore(tmp_path / "api", objects)
    staged = api.staging()
    (staged / "y.npy").write_bytes(b"labels")
    dataset_id = uuid.uuid4()
    api.commit(staged, dataset_id)
    key = objects.key("datasets", str(dataset_id), "y.npy")
    objects.client.put_object(Bucket=objects.location.bucket, Key=key, Body=b"LABELS")
    worker = S3DatasetStore(tmp_path / "worker", objects)
    with pytest.raises(ArtifactCorrupt):
        worker.folder(dataset_id)
    assert not (worker.root / str(dataset_id)).exists()


def test_checkpoint_copies_are_replaced_each_epoch_fetched_elsewhere_and_removed_with_the_job(objects: S3Objects,
                                                                                               tmp_path: Path) -> None:  # fmt: skip
    copies, job_id = S3Checkpoints(objects), uuid.uuid4()
    local = tmp_path / "a" / f"{job_id}.1.pt"
    local.parent.mkdir()
    for epoch in (b"epoch 1", b"epoch 2"):
        local.write_bytes(epoch)
        copies.upload(local)
    elsewhere = tmp_path / "b" / local.name
    assert copies.fetch(elsewhere) and elsewhere.read_bytes() == b"epoch 2"
    assert not copies.fetch(tmp_path / "b" / f"{uuid.uuid4()}.1.pt")
    copies.remove_job(job_id)
    assert objects.keys(objects.key("checkpoints")) == []
