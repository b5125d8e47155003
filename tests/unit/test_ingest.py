"""Upload parsers on files the tests make: what they accept, and how they name what they refuse."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.data.arrays import RowView
from services.data.ingest_common import DatasetError, UploadOptions, ZipLimits
from services.data.ingest_files import ingest_image_zip, ingest_npz
from services.data.ingest_tabular import ingest_csv, ingest_text_csv
from services.data.text import build_vocabulary, encode
from tests.datasets_factory import image_zip, iris_csv, npz_bytes, sentiment_csv

LIMITS = ZipLimits(max_files=1000, max_uncompressed_bytes=50 * 2**20)


def _write(tmp_path: Path, content: str | bytes, name: str = "upload") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    (tmp_path / "out").mkdir(exist_ok=True)
    return path


def _csv(tmp_path: Path, content: str, **options: object) -> tuple[np.ndarray, np.ndarray, object]:
    result = ingest_csv(_write(tmp_path, content), tmp_path / "out", UploadOptions(format="csv", **options))  # type: ignore[arg-type]
    return np.load(tmp_path / "out" / "x.npy"), np.load(tmp_path / "out" / "y.npy"), result


def test_csv_with_string_labels(tmp_path: Path) -> None:
    x, y, result = _csv(tmp_path, iris_csv(), target="species")
    assert x.shape == (150, 4) and x.dtype == np.float32
    assert result.class_names == ["setosa", "versicolor", "virginica"]  # type: ignore[attr-defined]
    assert np.bincount(y).tolist() == [50, 50, 50]


def test_csv_numeric_target_is_regression_unless_it_looks_like_class_ids(tmp_path: Path) -> None:
    _, y, result = _csv(tmp_path, "a,price\n1,10.5\n2,11.25\n3,9.0\n", target="price")
    assert result.task == "regression" and y.tolist() == [[10.5], [11.25], [9.0]]  # type: ignore[attr-defined]
    _, y, result = _csv(tmp_path, "a,label\n1,0\n2,1\n3,1\n", target="label")
    assert result.task == "classification" and result.class_names == ["0", "1"] and y.tolist() == [0, 1, 1]  # type: ignore[attr-defined]
    _, _, result = _csv(tmp_path, "a,label\n1,0\n2,1\n3,1\n", target="label", task="regression")
    assert result.task == "regression"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("content", "options", "where", "message"),
    [
        ("a,b,y\n1,2,x\n3,oops,y\n", {"target": "y"}, "row 3, column 'b'", "row 3, column 'b': 'oops' is not a number"),
        ("a,b,y\n1,2,x\n3,,y\n", {"target": "y"}, "row 3, column 'b'", "'' is not a number"),
        ("a,b,y\n1,2,x\n3,4\n", {"target": "y"}, "row 3", "row 3 has 2 values; the header has 3"),
        ("a,b,y\n1,2,x\n", {"target": "label"}, "column 'label'", "no target column 'label': the columns are a, b, y"),
        ("", {"target": "y"}, "file", "the file is empty"),
        ("a,b,y\n", {"target": "y"}, "column 'y'", "no data rows"),
        ("a,y\n1,x\n2,x\n", {"target": "y"}, "column 'y'", "at least 2 classes"),
        ("a,b,y\n1,2,x\n", {}, "target", "'target' is required"),
        ("a,b,y\n1,inf,x\n2,3,z\n", {"target": "y"}, "row 2, column 'b'", "not a finite number"),
    ],
)
def test_bad_csv_names_the_row_or_column(tmp_path: Path, content: str, options: dict, where: str, message: str) -> None:
    with pytest.raises(DatasetError) as err:
        _csv(tmp_path, content, **options)
    assert err.value.where == where and message in err.value.message


def test_csv_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a UTF-8 CSV"):
        ingest_csv(_write(tmp_path, b"a,y\n\xff\xfe,1\n"), tmp_path / "out", UploadOptions(format="csv", target="y"))


def test_text_csv(tmp_path: Path) -> None:
    result = ingest_text_csv(_write(tmp_path, sentiment_csv(10)), tmp_path / "out", UploadOptions(format="text_csv"))
    assert (result.n_samples, result.dtype, result.class_names) == (10, "text", ["negative", "positive"])
    with pytest.raises(DatasetError, match="no text column 'review'"):
        ingest_text_csv(_write(tmp_path, sentiment_csv(4)), tmp_path / "out", UploadOptions(format="text_csv", text_column="review"))


def test_vocabulary_comes_from_frequency_and_encoding_pads_truncates_and_marks_unknowns() -> None:
    vocabulary = build_vocabulary(["b a b", "c b a"], max_tokens=4)
    assert vocabulary == ["", "[UNK]", "b", "a"]
    assert encode(["A b zzz", "b b b b b"], vocabulary, 3).tolist() == [[3, 2, 1], [2, 2, 2]]
    assert encode([""], vocabulary, 2).tolist() == [[0, 0]]


def test_npz_keeps_any_shape_and_refuses_pickles(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(6, 4, 4, 2)).astype(np.float32)
    result = ingest_npz(_write(tmp_path, npz_bytes(x=x, y=np.array([0, 1, 2, 0, 1, 2]))), tmp_path / "out", UploadOptions(format="npz"),
                        LIMITS)  # fmt: skip
    assert result.feature_shape == (4, 4, 2) and result.class_names == ["0", "1", "2"]
    np.testing.assert_array_equal(RowView(tmp_path / "out" / "x.npy").read(np.arange(6)), x)
    objects = npz_bytes(x=np.array([{"a": 1}] * 2, dtype=object), y=np.array([0, 1]))
    with pytest.raises(DatasetError, match="holds Python objects") as err:
        ingest_npz(_write(tmp_path, objects), tmp_path / "out", UploadOptions(format="npz"), LIMITS)
    assert err.value.where == "array 'x'"


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((3, 2))}, "no array 'y'"),
        ({"x": np.zeros((3, 2)), "y": np.zeros(4, np.int64)}, "'x' has 3 rows but 'y' has 4"),
        ({"x": np.array(["a", "b"]), "y": np.zeros(2, np.int64)}, "must hold numbers"),
        ({"x": np.zeros(3), "y": np.zeros(3, np.int64)}, "must be (samples, features...)"),
    ],
)
def test_bad_npz(tmp_path: Path, arrays: dict, message: str) -> None:
    with pytest.raises(DatasetError) as err:
        ingest_npz(_write(tmp_path, npz_bytes(**arrays)), tmp_path / "out", UploadOptions(format="npz"), LIMITS)
    assert message in err.value.message


def test_corrupt_zip_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a readable ZIP"):
        ingest_npz(_write(tmp_path, b"PK\x03\x04 not really"), tmp_path / "out", UploadOptions(format="npz"), LIMITS)


def test_image_zip_one_folder_per_class(tmp_path: Path) -> None:
    result = ingest_image_zip(_write(tmp_path, image_zip(per_class=3)), tmp_path / "out",
                              UploadOptions(format="image_zip", image_size=(8, 10)), LIMITS)  # fmt: skip
    x, y = np.load(tmp_path / "out" / "x.npy"), np.load(tmp_path / "out" / "y.npy")
    assert x.shape == (6, 8, 10, 3) and 0 <= x.min() and x.max() <= 1
    assert result.class_names == ["day", "night"] and y.tolist().count(0) == 3
    assert x[y == 0].mean() > x[y == 1].mean()  # bright days, dark nights


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _png() -> bytes:
    image = io.BytesIO()
    Image.new("RGB", (4, 4)).save(image, "PNG")
    return image.getvalue()


@pytest.mark.parametrize(
    ("entries", "where", "message"),
    [
        ({"../evil/a.png": _png(), "b/b.png": _png()}, "file '../evil/a.png'", "unsafe path"),
        ({"/abs/a.png": _png(), "b/b.png": _png()}, "file '/abs/a.png'", "unsafe path"),
        ({"a/1.png": b"not an image", "b/1.png": _png()}, "file 'a/1.png'", "not a readable PNG or JPEG"),
        ({"a/1.gif": _png(), "b/1.png": _png()}, "file 'a/1.gif'", "not a PNG or JPEG file"),
        ({"loose.png": _png(), "b/1.png": _png()}, "file 'loose.png'", "not inside a class folder"),
        ({"a/1.png": _png(), "a/2.png": _png()}, "file", "at least 2 classes"),
    ],
)
def test_bad_image_zip_names_the_file(tmp_path: Path, entries: dict, where: str, message: str) -> None:
    with pytest.raises(DatasetError) as err:
        ingest_image_zip(_write(tmp_path, _zip(entries)), tmp_path / "out", UploadOptions(format="image_zip"), LIMITS)
    assert err.value.where == where and message in err.value.message


def test_zip_limits_stop_bombs_before_decoding(tmp_path: Path) -> None:
    bomb = _zip({"a/1.png": b"\0" * 5_000_000, "b/1.png": _png()})  # compresses to a few KB
    assert len(bomb) < 50_000
    with pytest.raises(DatasetError, match="unpacks to .* bytes; the limit is 1000000"):
        ingest_image_zip(_write(tmp_path, bomb), tmp_path / "out", UploadOptions(format="image_zip"), ZipLimits(1000, 1_000_000))
    with pytest.raises(DatasetError, match="holds 2 entries; the limit is 1"):
        ingest_image_zip(_write(tmp_path, _zip({"a/1.png": _png(), "b/1.png": _png()})), tmp_path / "out",
                         UploadOptions(format="image_zip"), ZipLimits(1, 10**9))  # fmt: skip
