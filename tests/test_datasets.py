"""Every loader on small files written in the real format, and on broken ones: the error names the file and
the problem."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from prunefl_edge.datasets import DatasetError, load_dataset
from prunefl_edge.datasets.cifar10 import RECORD
from prunefl_edge.datasets.idx import read_idx


def idx_bytes(arr: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write(path: Path, data: bytes, gz: bool = False) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    return path


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, n, gz in (("train", 12, True), ("t10k", 5, False)):
        write(tmp_path / f"{split}-images-idx3-ubyte", idx_bytes(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)), gz)
        write(tmp_path / f"{split}-labels-idx1-ubyte", idx_bytes(np.arange(n, dtype=np.uint8) % 10), gz)
    return tmp_path


def test_idx_directory_plain_and_gzip(mnist_dir: Path) -> None:
    d = load_dataset(mnist_dir)
    assert d.x_train.shape == (12, 1, 28, 28) and d.x_train.dtype == np.float32
    assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    assert d.x_test.shape == (5, 1, 28, 28) and list(d.y_test) == [0, 1, 2, 3, 4]
    assert d.num_classes == 10


@pytest.mark.parametrize("subset, labels, classes, offset", [
    ("letters", np.arange(1, 27), 26, 1),  # EMNIST letters labels a..z as 1..26
    ("digits", np.arange(0, 10), 10, 0),
])
def test_emnist_files_transposed_and_letters_counted_from_zero(tmp_path: Path, subset: str, labels: np.ndarray,
                                                               classes: int, offset: int) -> None:
    rng = np.random.default_rng(1)
    imgs = {}
    for split, n in (("train", len(labels) * 2), ("test", len(labels))):
        imgs[split] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = np.resize(labels, n).astype(np.uint8)
        write(tmp_path / f"emnist-{subset}-{split}-images-idx3-ubyte", idx_bytes(imgs[split]), gz=split == "train")
        write(tmp_path / f"emnist-{subset}-{split}-labels-idx1-ubyte", idx_bytes(y))
    d = load_dataset(tmp_path)
    assert d.num_classes == classes
    assert d.y_train.min() == 0 and d.y_train.max() == classes - 1
    np.testing.assert_array_equal(d.y_test, np.resize(labels, len(labels)) - offset)
    # stored transposed (column-major) in EMNIST: the loader turns them upright
    np.testing.assert_array_equal(d.x_train[3, 0], imgs["train"][3].T.astype(np.float32) / 255)


def test_idx_broken_files(tmp_path: Path, mnist_dir: Path) -> None:
    bad = write(tmp_path / "bad", b"\x08\x03\x00\x00rest")
    with pytest.raises(DatasetError, match="bad: bad magic number"):
        read_idx(bad)
    good = idx_bytes(np.zeros((4, 28, 28), np.uint8))
    with pytest.raises(DatasetError, match="trunc: .*truncated"):
        read_idx(write(tmp_path / "trunc", good[:-10]))
    with pytest.raises(DatasetError, match="unknown IDX element type"):
        read_idx(write(tmp_path / "type", b"\x00\x00\x42\x01\x00\x00\x00\x01x"))
    with pytest.raises(DatasetError, match="cannot read"):
        read_idx(write(tmp_path / "gz", b"\x1f\x8b\x08\x00broken gzip"))
    # label count mismatch
    (mnist_dir / "train-labels-idx1-ubyte.gz").unlink()
    write(mnist_dir / "train-labels-idx1-ubyte", idx_bytes(np.zeros(11, np.uint8)))
    with pytest.raises(DatasetError, match="12 images but .* 11 labels"):
        load_dataset(mnist_dir)


def test_idx_wrong_test_image_size(mnist_dir: Path) -> None:
    write(mnist_dir / "t10k-images-idx3-ubyte", idx_bytes(np.zeros((5, 20, 20), np.uint8)))
    with pytest.raises(DatasetError, match="images are \\(20, 20\\)"):
        load_dataset(mnist_dir)


def leaf_doc(users: dict[str, int], rng: np.random.Generator) -> dict:
    return {"users": list(users), "num_samples": list(users.values()),
            "user_data": {u: {"x": rng.random((n, 784)).round(3).tolist(), "y": rng.integers(0, 62, n).tolist()}
                          for u, n in users.items()}}


def test_leaf_users_are_natural_clients(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    (tmp_path / "train" / "a.json").write_text(json.dumps(leaf_doc({"f0001": 3, "f0002": 5}, rng)))
    (tmp_path / "train" / "b.json").write_text(json.dumps(leaf_doc({"f0003": 2}, rng)))
    (tmp_path / "test" / "a.json").write_text(json.dumps(leaf_doc({"f0001": 2}, rng)))
    d = load_dataset(tmp_path, "leaf")
    assert d.x_train.shape == (10, 1, 28, 28) and d.num_classes == 62
    assert [len(g) for g in d.groups] == [3, 5, 2] and d.group_names == ["f0001", "f0002", "f0003"]
    assert np.array_equal(np.sort(np.concatenate(d.groups)), np.arange(10))
    assert d.x_test.shape == (2, 1, 28, 28)


def test_leaf_broken(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    doc = leaf_doc({"u": 3}, rng)
    doc["num_samples"] = [4]
    (tmp_path / "n.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match="n.json: user 'u': num_samples says 4, data holds 3"):
        load_dataset(tmp_path / "n.json")
    doc = leaf_doc({"u": 2}, rng)
    doc["user_data"]["u"]["x"][0] = [0.5] * 100
    (tmp_path / "s.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match="s.json: user 'u'"):
        load_dataset(tmp_path / "s.json")
    (tmp_path / "t.json").write_text('{"users": [')
    with pytest.raises(DatasetError, match="t.json: not readable JSON"):
        load_dataset(tmp_path / "t.json")


def cifar_batch(n: int, rng: np.random.Generator) -> bytes:
    rec = rng.integers(0, 256, (n, RECORD), dtype=np.uint8)
    rec[:, 0] = np.arange(n) % 10
    return rec.tobytes()


def test_cifar10_directory_and_truncation(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    for k in (1, 2):
        (tmp_path / f"data_batch_{k}.bin").write_bytes(cifar_batch(4, rng))
    (tmp_path / "test_batch.bin").write_bytes(cifar_batch(3, rng))
    d = load_dataset(tmp_path)
    assert d.x_train.shape == (8, 3, 32, 32) and d.x_test.shape == (3, 3, 32, 32) and d.num_classes == 10
    (tmp_path / "data_batch_2.bin").write_bytes(cifar_batch(4, rng)[:-7])
    with pytest.raises(DatasetError, match="data_batch_2.bin: .*truncated"):
        load_dataset(tmp_path)
    bad = bytearray(cifar_batch(1, rng))
    bad[0] = 17
    (tmp_path / "one.bin").write_bytes(bytes(bad))
    with pytest.raises(DatasetError, match="label 17"):
        load_dataset(tmp_path / "one.bin")


def test_npz_never_unpickles(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    np.savez(tmp_path / "ok.npz", x=rng.integers(0, 256, (6, 8, 8), dtype=np.uint8), y=np.arange(6) % 3)
    d = load_dataset(tmp_path / "ok.npz")
    assert d.x_train.shape == (6, 1, 8, 8) and d.num_classes == 3
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object), y=np.zeros(1, int))
    with pytest.raises(DatasetError, match="obj.npz: not a readable .npz without objects"):
        load_dataset(tmp_path / "obj.npz")
    np.savez(tmp_path / "short.npz", x=np.zeros((4, 1, 2, 2), np.float32), y=np.zeros(3, int))
    with pytest.raises(DatasetError, match="4 images but 3 labels"):
        load_dataset(tmp_path / "short.npz")
    np.savez(tmp_path / "nolabels.npz", images=np.zeros(3))
    with pytest.raises(DatasetError, match="needs arrays x and y"):
        load_dataset(tmp_path / "nolabels.npz")


def test_bundled_real_data() -> None:
    d = load_dataset("mnist5k")
    assert d.x_train.shape == (5000, 1, 28, 28) and d.num_classes == 10
    assert load_dataset("digits").x_train.shape == (1797, 1, 8, 8)


def test_missing_path_is_clear(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file or directory"):
        load_dataset(tmp_path / "nothing")
