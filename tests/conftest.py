"""Fixtures that write tiny datasets in the real on-disk formats (IDX, CIFAR pickle batches, ImageFolder)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

# One OpenMP thread, set before torch loads: tests run tiny tensors, where extra threads only spin-wait, and
# pdeconv's --threads auto keeps a count the environment sets (tests of auto itself unset it).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest

from pdeconv import data


@pytest.fixture
def write_idx():
    """``write_idx(path, uint8_array)``: an IDX file, gzipped when the name ends in .gz."""
    return data.write_idx


@pytest.fixture
def stripes():
    """``stripes(n, size=28, seed=0) -> (images, labels)``: the learnable images the Fashion-MNIST files hold."""
    return data.stripes


@pytest.fixture
def make_fashion_mnist():
    """``make(folder, n_train, n_test, gz=True, size=28, seed=0)`` writes the four Fashion-MNIST IDX files."""
    return data.write_synthetic_fashion_mnist


@pytest.fixture
def make_cifar():
    """``make(root, name, n_per_batch, seed)`` writes torchvision's python batches; returns the arrays."""

    def make(root: Path, name: str = "cifar10", n_per_batch: int = 6, seed: int = 0):
        rng = np.random.default_rng(seed)
        folder = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
        folder.mkdir(parents=True, exist_ok=True)
        files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"] if name == "cifar10" else ["train", "test"]
        arrays = {}
        for file in files:
            data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)  # rows: R plane, G plane, B plane
            labels = rng.integers(0, 10 if name == "cifar10" else 100, n_per_batch).tolist()
            batch = {"data": data, "labels": labels} if name == "cifar10" else {"data": data, "fine_labels": labels}
            with open(folder / file, "wb") as f:
                pickle.dump(batch, f, protocol=2)  # the protocol of the real files
            arrays[file] = (data, labels)
        return arrays

    return make


@pytest.fixture
def make_image_folder():
    """``make(root, classes, per_class, size)`` writes root/{train,val}/<class>/<i>.png with Pillow."""
    from PIL import Image

    def make(root: Path, classes=("cat", "dog"), per_class: int = 3, size: tuple[int, int] = (20, 12)):
        rng = np.random.default_rng(0)
        for split in ("train", "val"):
            for c in classes:
                (root / split / c).mkdir(parents=True, exist_ok=True)
                for i in range(per_class):
                    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                    Image.fromarray(pixels).save(root / split / c / f"{i}.png")
        return root

    return make


@pytest.fixture(autouse=True)
def one_thread():
    """Every test on one intra-op thread: tests run tiny tensors, where extra threads only spin-wait (on a
    shared 2-core machine that made test files 8–50× slower); the setting is restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
