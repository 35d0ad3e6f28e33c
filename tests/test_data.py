"""chaosgrad.data: the IDX parser on files the test writes itself, the bundled sample, and
the errors for missing and malformed files."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from chaosgrad.data import IDX_FILES, mnist, read_idx


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: 00 00 08 ndim, big-endian sizes, data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(directory, n_train=6, n_test=3, gz=False):
    rng = np.random.default_rng(0)
    data = {"train_images": rng.integers(0, 256, (n_train, 28, 28)), "train_labels": rng.integers(0, 10, n_train),
            "test_images": rng.integers(0, 256, (n_test, 28, 28)), "test_labels": rng.integers(0, 10, n_test)}
    for key, array in data.items():
        raw = idx_bytes(array)
        (directory / (IDX_FILES[key] + (".gz" if gz else ""))).write_bytes(gzip.compress(raw) if gz else raw)
    return data


@pytest.mark.parametrize("gz", [False, True])
def test_idx_files_round_trip_plain_and_gzipped(tmp_path, gz):
    data = write_mnist(tmp_path, gz=gz)
    images = read_idx(tmp_path / (IDX_FILES["train_images"] + (".gz" if gz else "")))
    assert images.dtype == np.uint8 and images.shape == (6, 28, 28)
    np.testing.assert_array_equal(images, data["train_images"])
    X, y, Xt, yt = mnist(path=tmp_path)
    assert X.shape == (6, 784) and Xt.shape == (3, 784) and X.dtype == torch.float64
    torch.testing.assert_close(X, torch.from_numpy(data["train_images"].reshape(6, 784) / 255.0))
    assert y.tolist() == data["train_labels"].tolist() and yt.dtype == torch.int64
    assert mnist(n=4, path=tmp_path)[0].shape == (4, 784)


def test_environment_variable_points_at_the_files(tmp_path, monkeypatch):
    write_mnist(tmp_path, n_train=5)
    monkeypatch.setenv("CHAOSGRAD_MNIST", str(tmp_path))
    assert mnist()[0].shape == (5, 784)
    assert mnist(sample=True)[0].shape == (4000, 784)  # the book's chapter ignores the variable
    with pytest.raises(ValueError, match="give either path .* or sample=True, not both"):
        mnist(path=tmp_path, sample=True)


def test_bundled_sample_has_5000_digits_balanced_labels_and_unit_pixels(monkeypatch):
    monkeypatch.delenv("CHAOSGRAD_MNIST", raising=False)
    X, y, Xt, yt = mnist()
    assert (len(X), len(Xt)) == (4000, 1000) and X.shape[1] == 784
    assert y.bincount().tolist() == [400] * 10 and yt.bincount().tolist() == [100] * 10
    assert X.min() == 0 and X.max() == 1 and Xt.min() >= 0 and Xt.max() <= 1
    assert 0.1 < X.mean() < 0.2  # MNIST's mean pixel is about 0.13


def test_missing_and_malformed_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; it must hold the four IDX files"):
        mnist(path=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="has no train-images-idx3-ubyte"):
        mnist(path=tmp_path)
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x00\x0d\x03" + bytes(20))
    with pytest.raises(ValueError, match="not an IDX file of unsigned bytes"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(idx_bytes(np.zeros((2, 3), dtype=np.uint8))[:-1])
    with pytest.raises(ValueError, match=r"shape \(2, 3\) \(6 bytes of data\), but the file holds 5"):
        read_idx(short)
    write_mnist(tmp_path)
    with pytest.raises(ValueError, match="n must be a whole number in 1..6"):
        mnist(n=7, path=tmp_path)


def test_full_mnist_tool_repeats_chapter_6s_run_on_given_files(tmp_path, monkeypatch, capsys):
    """tools/full_mnist.py (quoted in chapter 6 for the full split) on six written digits."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import full_mnist

    monkeypatch.delenv("CHAOSGRAD_MNIST", raising=False)
    assert full_mnist.main([]) == 2
    assert "set CHAOSGRAD_MNIST" in capsys.readouterr().err
    write_mnist(tmp_path)
    default = torch.get_default_dtype()
    assert full_mnist.main([str(tmp_path), "--steps", "1"]) == 0
    assert torch.get_default_dtype() == default  # a caller's default dtype is left alone
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "6 training and 3 held-out digits, mean pixel 0.5009"
    assert lines[1].split() == ["loss", "training", "accuracy", "held-out", "accuracy", "sharpness", "S",
                                "alpha", "S"]
    rows = [line.split() for line in lines[3:-1]]
    assert [r[0] for r in rows] == ["0", "1"]
    assert float(rows[1][1]) < float(rows[0][1])  # the gradient step lowered the loss
    assert abs(float(rows[0][5]) - 0.1 * float(rows[0][4])) < 1.5e-3  # alpha S with alpha = 0.1
