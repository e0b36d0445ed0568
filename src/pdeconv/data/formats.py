"""The on-disk formats of the datasets: IDX (Fashion-MNIST) read and written, CIFAR's python batches read
with an unpickler that only accepts numpy arrays, and a learnable stand-in with the real format for tests."""

from __future__ import annotations

import codecs
import gzip
import os
import pickle
from pathlib import Path

import numpy as np

from pdeconv.errors import PdeconvError


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw): magic ``0 0 dtype ndim``, ``ndim`` big-endian int32 sizes, data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # gzip raises BadGzipFile (an OSError) or EOFError when truncated
        raise PdeconvError(f"{path}: cannot read IDX file ({e})") from None
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in dtypes:
        raise PdeconvError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    shape = tuple(int(s) for s in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    dtype = np.dtype(dtypes[raw[2]])
    expected = 4 + 4 * ndim + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise PdeconvError(f"{path}: IDX file has {len(raw)} bytes, its header says {expected}; re-download it")
    return np.frombuffer(raw, dtype, offset=4 + 4 * ndim).reshape(shape).astype(dtype.newbyteorder("="))


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts/lists of numpy arrays and nothing else: any other global is refused."""

    # numpy < 2 pickles name numpy.core.*, numpy >= 2 numpy._core.*; both mean the same two functions,
    # which we take from numpy's own pickling so that no deprecated module is imported.
    _reconstruct, _frombuffer = np.zeros(1).__reduce__()[0], np.zeros(1).__reduce_ex__(5)[0]
    _ALLOWED = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # how protocol-2 pickles from Python 3 spell bytes
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy.core.numeric", "_frombuffer"): _frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[module, name]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")


def read_cifar_batch(path: str | os.PathLike) -> dict:
    """One CIFAR python batch (a pickled dict with ``data`` (N, 3072) uint8 and label lists), safely."""
    try:
        with open(path, "rb") as f:
            batch = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise PdeconvError(f"{path}: not a CIFAR batch file ({e})") from None
    if not isinstance(batch, dict):
        raise PdeconvError(f"{path}: not a CIFAR batch file (expected a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}



def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file (the Fashion-MNIST format; gzipped when the name ends in ``.gz``):
    bytes ``0 0 0x08 ndim``, ``ndim`` big-endian int32 sizes, then the data. The inverse of :func:`read_idx`."""
    path = Path(path)
    array = np.ascontiguousarray(array, np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as f:
        f.write(header + array.tobytes())
    return path


def stripes(n: int, *, size: int = 28, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` learnable uint8 images ``(n, size, size)`` and labels 0..9: class k is a grating of period
    (2, 3, 4, 6, 8)[k // 2], horizontal (k even) or vertical (k odd), with a random phase and noise. Random crops
    and mirror images keep the class, as for real Fashion-MNIST."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    coord = np.arange(size)
    images = np.empty((n, size, size))
    for i, k in enumerate(labels):
        period = (2, 3, 4, 6, 8)[k // 2]
        wave = np.cos(2 * np.pi * coord / period + rng.uniform(0, 2 * np.pi))
        images[i] = wave[:, None] if k % 2 == 0 else wave[None, :]
    images = 127.5 * (1 + images) + rng.normal(0, 25, images.shape)
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.uint8)


def write_synthetic_fashion_mnist(
    folder: str | os.PathLike, n_train: int = 64, n_test: int = 32, *, gz: bool = True, size: int = 28, seed: int = 0
) -> Path:
    """The four Fashion-MNIST IDX files in ``folder``, holding :func:`stripes` (train with ``seed``, test with
    ``seed + 1``): a stand-in with the real format, for smoke runs, tests and machines without the data."""
    folder = Path(folder)
    suffix = ".gz" if gz else ""
    for split, n, s in (("train", n_train, seed), ("t10k", n_test, seed + 1)):
        x, y = stripes(n, size=size, seed=s)
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", x)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", y)
    return folder
