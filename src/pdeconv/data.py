"""Datasets for training: Fashion-MNIST (default), CIFAR-10/100, ImageNet or any ImageFolder tree.

Images come out as normalised float32 tensors (N, C, H, W), labels as int64 (N,).

Small datasets (Fashion-MNIST, CIFAR) are read once into uint8 tensors and served by :class:`TensorLoader`,
which augments whole batches at once (random crop after zero padding, horizontal flip), the way fast
CIFAR recipes (airbench) do: a few tensor ops per batch instead of a Python call per image, and it can live on
the GPU.
ImageFolder trees use a ``DataLoader`` with ``torchvision.transforms.v2``.

Both loaders make their order and augmentation a function of ``(seed, epoch)`` via ``set_epoch``, so a
resumed run sees exactly the data an uninterrupted run would have seen. With ``world_size > 1`` each rank
gets its own shard (training: a shared permutation split ``rank::world_size``, as DistributedSampler does).

Where data is looked for, in order: ``data_dir``, ``$PDECONV_DATA``, ``~/.cache/pdeconv`` (or
``$XDG_CACHE_HOME/pdeconv``), then system folders (Debian's ``dataset-fashion-mnist`` installs
``/usr/share/datasets/fashion-mnist``). If absent, torchvision downloads it into the cache.

Formats: Fashion-MNIST as IDX files (gzipped or not; flat folder or torchvision's ``FashionMNIST/raw``);
CIFAR as torchvision's python pickle batches (``cifar-10-batches-py``, ``cifar-100-python``), read with an
unpickler that only accepts numpy arrays, so a tampered file cannot run code.
"""

from __future__ import annotations

import codecs
import gzip
import os
import pickle
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler, Subset

from pdeconv.normalization import STATS


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and the training loop need to know about a dataset."""

    name: str
    num_classes: int
    in_chans: int
    image_size: int  # side of the (square) training crop, pixels
    mean: tuple[float, ...]  # per channel, of pixel values scaled to [0, 1]
    std: tuple[float, ...]
    crop_padding: int  # zero padding before the random crop (tensor datasets)
    flip: bool  # random horizontal flip when training
    in_memory: bool  # served by TensorLoader (True) or an ImageFolder DataLoader (False)
    source: str = ""  # the folder the data was read from (set by build_loaders)
    fingerprint: str = ""  # what was read: a sha256 of the files (in-memory sets) or the image counts


#: The registry. Flip choices: Fashion-MNIST garments are near mirror-symmetric and a mirrored shoe is
#: still a shoe, so flipping is harmless and standard in fast recipes; the same holds for CIFAR and ImageNet.
DATASETS: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo("fashion-mnist", 10, 1, 28, *STATS["fashion-mnist"], 2, True, True),
    # Fashion-MNIST with every image rotated, scaled and shifted once, by a fixed draw (:func:`rts_folder`).
    "fashion-mnist-rts": DatasetInfo("fashion-mnist-rts", 10, 1, 28, *STATS["fashion-mnist-rts"], 2, True, True),
    "cifar10": DatasetInfo("cifar10", 10, 3, 32, *STATS["cifar10"], 4, True, True),
    "cifar100": DatasetInfo("cifar100", 100, 3, 32, *STATS["cifar100"], 4, True, True),
    "imagenet": DatasetInfo("imagenet", 1000, 3, 224, *STATS["imagenet"], 0, True, False),
    # Any tree DIR/train/<class>/*, DIR/val/<class>/*; num_classes is read from the tree.
    "imagefolder": DatasetInfo("imagefolder", 0, 3, 224, *STATS["imagenet"], 0, True, False),
}

#: Folders that system packages install datasets into (searched last).
SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}

_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_CIFAR_FILES = {
    "cifar10": {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
    "cifar100": {"train": ["train"], "test": ["test"]},
}
# Sub-folders of a search root that may hold the data (torchvision's layout and flat ones).
_SUBDIRS = {
    "fashion-mnist": ("", "FashionMNIST/raw", "fashion-mnist"),
    "fashion-mnist-rts": ("",),
    "cifar10": ("cifar-10-batches-py", ""),
    "cifar100": ("cifar-100-python", ""),
    "imagenet": ("", "imagenet"),
    "imagefolder": ("",),
}


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry of ``name``; ValueError listing the valid names otherwise."""
    key = name.lower().replace("_", "-")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}")
    return DATASETS[key]


def cache_dir() -> Path:
    """Where downloads go: ``$XDG_CACHE_HOME/pdeconv`` or ``~/.cache/pdeconv``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pdeconv"


def search_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Candidate roots for ``name`` in search order: data_dir, $PDECONV_DATA, the cache, system folders."""
    if name == "imagefolder":  # a user's own tree: only where they say
        return [Path(data_dir)] if data_dir else []
    roots = [Path(data_dir)] if data_dir else []
    if os.environ.get("PDECONV_DATA"):
        roots.append(Path(os.environ["PDECONV_DATA"]))
    roots.append(cache_dir())
    roots += SYSTEM_DIRS.get(name, ())
    return [r.expanduser() for r in roots]


# ------------------------------------------------------------------------------------------ file formats


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw): magic ``0 0 dtype ndim``, ``ndim`` big-endian int32 sizes, data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # gzip raises BadGzipFile (an OSError) or EOFError when truncated
        raise ValueError(f"{path}: cannot read IDX file ({e})") from None
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in dtypes:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    shape = tuple(int(s) for s in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    dtype = np.dtype(dtypes[raw[2]])
    expected = 4 + 4 * ndim + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: IDX file has {len(raw)} bytes, its header says {expected}; re-download it")
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
        raise ValueError(f"{path}: not a CIFAR batch file ({e})") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: not a CIFAR batch file (expected a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


# ------------------------------------------------------------------------------------------ locating data


def _has_fmnist(folder: Path) -> bool:
    return all(_idx_path(folder, f) is not None for pair in _FMNIST_FILES.values() for f in pair)


def _idx_path(folder: Path, stem: str) -> Path | None:
    for p in (folder / stem, folder / f"{stem}.gz"):  # the uncompressed file is faster to read
        if p.is_file():
            return p
    return None


def _has_cifar(name: str) -> Callable[[Path], bool]:
    return lambda folder: all((folder / f).is_file() for fs in _CIFAR_FILES[name].values() for f in fs)


def _has_folders(folder: Path) -> bool:
    return (folder / "train").is_dir() and (folder / "val").is_dir()


_CHECKS: dict[str, Callable[[Path], bool]] = {
    "fashion-mnist": _has_fmnist,
    "fashion-mnist-rts": _has_fmnist,
    "cifar10": _has_cifar("cifar10"),
    "cifar100": _has_cifar("cifar100"),
    "imagenet": _has_folders,
    "imagefolder": _has_folders,
}

_HOW_TO_GET = {
    "fashion-mnist-rts": "it is built from Fashion-MNIST, which was not found",
    "fashion-mnist": "install it with `apt-get install dataset-fashion-mnist`, pass --data-dir DIR holding the "
    "four IDX files (train-images-idx3-ubyte[.gz], ...), or run once with internet access to download it",
    "cifar10": "pass --data-dir DIR holding cifar-10-batches-py/ (torchvision's format), "
    "or run once with internet access to download it",
    "cifar100": "pass --data-dir DIR holding cifar-100-python/ (torchvision's format), "
    "or run once with internet access to download it",
    "imagenet": "pass --data-dir DIR with DIR/train/<class>/*.JPEG and DIR/val/<class>/*.JPEG "
    "(torchvision's ImageFolder layout; the validation images sorted into class folders)",
    "imagefolder": "pass --data-dir DIR with DIR/train/<class>/* and DIR/val/<class>/*",
}


def _download(name: str, root: Path) -> None:
    """torchvision's download into ``root`` (checked against its MD5 sums)."""
    from torchvision import datasets
    from torchvision.datasets.utils import download_and_extract_archive

    root.mkdir(parents=True, exist_ok=True)
    # the folders torchvision makes: removed again, if it left them empty, when the download fails
    made = [d for d in (root / "FashionMNIST", root / "FashionMNIST" / "raw") if not d.exists()]
    try:
        if name == "fashion-mnist":
            datasets.FashionMNIST(str(root), train=True, download=True)  # fetches all four files
        else:  # fetch and unpack the archive only; reading is ours (numpy-only unpickler)
            cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
            download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
    except BaseException:
        for d in reversed(made):
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        raise


def find_data(name: str, data_dir: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """The folder holding dataset ``name``.

    With ``data_dir`` the data must be there (in one of the layouts the module docstring lists): a folder that
    does not exist is an error, and an existing one without the data gets it downloaded into it when allowed
    and possible. Without ``data_dir``: ``$PDECONV_DATA``, the cache, the system folders, then a download into
    :func:`cache_dir`. FileNotFoundError (one line) says where it looked and how to get the data.
    """
    name = dataset_info(name).name
    if name == "fashion-mnist-rts":
        return rts_folder(data_dir, download=download)
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            what = "is a file, not a folder" if root.exists() else "does not exist"
            raise FileNotFoundError(f"data directory {root} {what}; pass an existing folder as --data-dir, or leave "
                                    f"--data-dir out to search the usual places for {name}")
        roots, target = [root], root
    else:
        roots, target = search_dirs(name), cache_dir()
    for root in roots:
        for sub in _SUBDIRS[name]:
            if _CHECKS[name](root / sub):
                return root / sub
    reason = "no download for this dataset"
    if download and name in ("fashion-mnist", "cifar10", "cifar100"):
        try:
            _download(name, target)
            return find_data(name, target if data_dir is not None else cache_dir(), download=False)
        except (OSError, RuntimeError, ValueError) as e:  # no network, bad checksum, ...
            message = " ".join(str(e).split())  # torchvision's message spans lines: the reason is on the last
            reason = f"download failed: {message[:300] if message else type(e).__name__}"
    elif not download:
        reason = "download disabled"
    where = ", ".join(str(r) for r in roots) or "no folder given"
    raise FileNotFoundError(f"{name} not found (looked in {where}; {reason}); {_HOW_TO_GET[name]}")


def fingerprint(paths: list[Path]) -> str:
    """``sha256:`` of the files' bytes in order: which data a run actually read (recorded in its config.json)."""
    import hashlib

    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


#: How ``fashion-mnist-rts`` is drawn: its seed and ranges (see :func:`pdeconv.warp.draw_similarities`).
RTS = {"seed": 0, "angles": (-180.0, 180.0), "scales": (0.7, 1.0), "max_shift": 6.0}
_RTS_DRAWS = "draws.npz"


def rts_folder(data_dir: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """The folder of ``fashion-mnist-rts``, built on first use from the Fashion-MNIST that :func:`find_data` finds.

    Every image, train and test, is turned by an angle uniform in [−180°, 180°), scaled by a factor uniform in
    [0.7, 1.0] about the canvas centre and shifted by up to ±6 pixels in x and in y on its 28 × 28 canvas
    (:func:`pdeconv.warp.similarity_warp`; what leaves the canvas is cut). Image i of split ``train`` (0) or
    ``test`` (1) takes the draw :func:`pdeconv.warp.draw_similarities` gives ``(RTS["seed"], split, i)``, so the
    test set is one fixed set. The four IDX files and ``draws.npz`` (each image's angle, scale and shift) are
    cached in ``cache_dir()/fashion-mnist-rts/<source hash>/``, written whole or not at all.
    """
    import shutil
    import tempfile

    from pdeconv.warp import draw_similarities, similarity_warp

    source = find_data("fashion-mnist", data_dir, download=download)
    files = [_idx_path(source, f) for pair in _FMNIST_FILES.values() for f in pair]
    target = cache_dir() / "fashion-mnist-rts" / fingerprint(files).removeprefix("sha256:")[:16]
    if _has_fmnist(target) and (target / _RTS_DRAWS).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        draws = {}
        for split_id, (split, (images_name, labels_name)) in enumerate(_FMNIST_FILES.items()):
            images, labels = read_idx(_idx_path(source, images_name)), read_idx(_idx_path(source, labels_name))
            d = draw_similarities(RTS["seed"], split_id, len(images), angles=RTS["angles"], scales=RTS["scales"],
                                  max_shift=RTS["max_shift"])
            warped = [similarity_warp(torch.from_numpy(images[i:i + 5000, None]).contiguous(),
                                      torch.from_numpy(d["angle"][i:i + 5000]),
                                      torch.from_numpy(d["scale"][i:i + 5000]),
                                      torch.from_numpy(d["shift"][i:i + 5000]))
                      for i in range(0, len(images), 5000)]
            write_idx(staging / images_name, torch.cat(warped)[:, 0].numpy())
            write_idx(staging / labels_name, labels)
            draws |= {f"{split}_{k}": v for k, v in d.items()}
        np.savez(staging / _RTS_DRAWS, **draws)
        try:
            staging.rename(target)
        except OSError:  # another process built it meanwhile: theirs is the same
            if not _has_fmnist(target):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_tensors(name: str, data_dir: str | os.PathLike | None = None, *, download: bool = True):
    """A small dataset as uint8/int64 tensors: ``(train_x, train_y, test_x, test_y)``, x of shape (N, C, H, W).

    ``data_dir`` and ``download`` as in :func:`find_data`. For the folder and files read, see :func:`read_dataset`.
    """
    return read_dataset(name, data_dir, download=download)[0]


def read_dataset(name: str, data_dir: str | os.PathLike | None = None, *, download: bool = True):
    """``(tensors, folder, files)``: :func:`load_tensors`'s tensors, the folder they came from and the files read."""
    info = dataset_info(name)
    if not info.in_memory:
        raise ValueError(f"dataset {info.name!r} is an image-folder dataset, not held in memory")
    folder = find_data(info.name, data_dir, download=download)
    out, files = [], []
    for split in ("train", "test"):
        if info.name in ("fashion-mnist", "fashion-mnist-rts"):
            images_file, labels_file = (_idx_path(folder, f) for f in _FMNIST_FILES[split])
            files += [images_file, labels_file]
            x, y = read_idx(images_file), read_idx(labels_file)
            if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
                raise ValueError(f"{images_file}: expected N×H×W images and N labels, got {x.shape}, {y.shape}")
            x = x[:, None]
        else:
            files += [folder / f for f in _CIFAR_FILES[info.name][split]]
            batches = [read_cifar_batch(folder / f) for f in _CIFAR_FILES[info.name][split]]
            key = "labels" if info.name == "cifar10" else "fine_labels"
            try:
                x = np.concatenate([np.asarray(b["data"], np.uint8) for b in batches]).reshape(-1, 3, 32, 32)
                y = np.concatenate([np.asarray(b[key]) for b in batches])
            except (KeyError, ValueError) as e:
                raise ValueError(f"{folder}: malformed {info.name} batch ({e!r})") from None
        out += [torch.from_numpy(np.ascontiguousarray(x, np.uint8)), torch.from_numpy(y.astype(np.int64))]
    return tuple(out), folder, files


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


# ------------------------------------------------------------------------------------------ augmentation


def random_crop(x: Tensor, padding: int, generator: torch.Generator, *, shifts: Tensor | None = None) -> Tensor:
    """Per-image random crop of the zero-padded batch: ``out[n, c, i, j] = pad(x)[n, c, i + dy_n, j + dx_n]``.

    ``dy_n, dx_n`` are uniform in ``0..2·padding``, drawn with ``generator`` (on its device), or given as
    ``shifts`` (2, n); shapes and dtype kept.
    """
    n, c, h, w = x.shape
    if shifts is None:
        shifts = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=generator.device)
    dy, dx = shifts.to(x.device)
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(n, c, h, w + 2 * padding)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(n, c, h, w)
    return padded.gather(2, rows).gather(3, cols)  # rows first, then columns: two cheap gathers


def random_flip(x: Tensor, generator: torch.Generator, *, mask: Tensor | None = None) -> Tensor:
    """Mirror each image left-right (x → W−1−x) with probability 1/2 (or where ``mask`` (n,) is true)."""
    if mask is None:
        mask = torch.rand(x.shape[0], generator=generator, device=generator.device) < 0.5
    return torch.where(mask.to(x.device)[:, None, None, None], x.flip(-1), x)


def _epoch_seed(*words: int) -> int:
    """A well-mixed 63-bit seed from (seed, epoch, ...)."""
    return int(np.random.SeedSequence([int(w) for w in words]).generate_state(2, np.uint32).view(np.uint64)[0]) >> 1


class TensorLoader:
    """Batches from uint8 images held in memory, augmented batch-wise, normalised on ``device``.

    Yields ``(images float32 (B, C, H, W), labels int64 (B,))``. Training (``shuffle=True``) draws a
    permutation shared by all ranks from ``(seed, epoch)``, takes this rank's shard ``rank::world_size``
    (padded to equal length like DistributedSampler) and drops the last incomplete batch; evaluation
    takes ``rank::world_size`` of the data in order, every image exactly once across ranks.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        batch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        shuffle: bool = False,
        crop_padding: int = 0,
        flip: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise ValueError("TensorLoader needs uint8 images (N, C, H, W) and N labels")
        self.device = torch.device(device)
        self.images, self.labels = images.to(self.device), labels.to(self.device)
        self.batch_size, self.shuffle = batch_size, shuffle
        self.crop_padding, self.flip = crop_padding, flip
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1)
        if shuffle and len(self) == 0:
            raise ValueError(
                f"batch size {batch_size} per process is larger than the {self._shard_size()} training "
                "images each process gets; use a smaller --batch-size"
            )

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order and augmentation the next iteration uses."""
        self.epoch = epoch

    def _shard_size(self) -> int:
        n = len(self.images)
        if self.shuffle:
            return -(-n // self.world_size)
        return len(range(self.rank, n, self.world_size))

    def _indices(self) -> Tensor:
        n = len(self.images)
        if not self.shuffle:
            return torch.arange(self.rank, n, self.world_size)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch)))
        total = self._shard_size() * self.world_size
        order = torch.cat([order, order[: total - n]])  # pad so every rank gets as many images
        return order[self.rank : total : self.world_size]

    def __len__(self) -> int:
        size = self._shard_size()
        return size // self.batch_size if self.shuffle else -(-size // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        indices = self._indices().to(self.device)
        # Augmentation is drawn for the global batch (every rank's images, in the order of one process's batch)
        # from (seed, epoch), and each rank takes its images' draws: an image is augmented the same whether one
        # process or several train. Drawn where the images are: no host-device copy (and wait) per batch on a GPU.
        augment = torch.Generator(self.device).manual_seed(_epoch_seed(self.seed, self.epoch, 1))
        mine = slice(self.rank, None, self.world_size)
        n_global = self.batch_size * self.world_size
        for b in range(len(self)):
            idx = indices[b * self.batch_size : (b + 1) * self.batch_size]
            x = self.images[idx]
            if self.shuffle and self.crop_padding:
                shifts = torch.randint(0, 2 * self.crop_padding + 1, (2, n_global), generator=augment,
                                       device=self.device)
                x = random_crop(x, self.crop_padding, augment, shifts=shifts[:, mine])
            if self.shuffle and self.flip:
                mask = torch.rand(n_global, generator=augment, device=self.device) < 0.5
                x = random_flip(x, augment, mask=mask[mine])
            yield (x.float().div_(255) - self.mean) / self.std, self.labels[idx]


class _EpochSampler(torch.utils.data.Sampler):
    """Yields ``(index, epoch)`` from another sampler, so the items' randomness can follow the epoch even in
    persistent workers (which keep the dataset object they started with)."""

    def __init__(self, sampler) -> None:
        self.sampler, self.epoch = sampler, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        return ((int(i), self.epoch) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


class _SeededItems(torch.utils.data.Dataset):
    """``dataset[i]`` with torch's random state seeded from ``(seed, epoch, i)`` for its transforms (and put back
    afterwards): an item's augmentation depends on nothing else, not the worker or the number of workers."""

    def __init__(self, dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, epoch = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_epoch_seed(self.seed, epoch, index))
            return self.dataset[index]


class FolderLoader(DataLoader):
    """A DataLoader whose order and augmentation are functions of ``(seed, epoch)``: the sampler's order by
    ``set_epoch``, each item's transforms by its own seed (:class:`_SeededItems`), so the workers persist
    across epochs and their number changes nothing."""

    def __init__(self, dataset, *, seed: int, rank: int = 0, sampler=None, **kwargs) -> None:
        sampler = _EpochSampler(sampler if sampler is not None else torch.utils.data.SequentialSampler(dataset))
        persistent = kwargs.get("num_workers", 0) > 0
        # its own generator: DataLoader draws a base seed per iteration, which must not touch torch's global RNG
        super().__init__(_SeededItems(dataset, seed), sampler=sampler, persistent_workers=persistent,
                         generator=torch.Generator().manual_seed(seed), **kwargs)
        self.seed, self.rank = seed, rank
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)


def folder_transforms(info: DatasetInfo, image_size: int, *, train: bool):
    """ImageNet-style transforms: RandomResizedCrop + flip (train), resize to size/0.875 + centre crop (eval)."""
    from torchvision.transforms import v2

    if train:
        geometry = [v2.RandomResizedCrop(image_size, antialias=True)]
        geometry += [v2.RandomHorizontalFlip()] if info.flip else []
    else:
        geometry = [v2.Resize(round(image_size / 0.875), antialias=True), v2.CenterCrop(image_size)]
    return v2.Compose(
        [*geometry, v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(info.mean, info.std)]
    )


# ------------------------------------------------------------------------------------------ the entry point


#: The seed of the validation draw (:func:`validation_indices`); the training subset's is 0.
VAL_SEED = 1


def validation_indices(total: int, n: int) -> Tensor:
    """The ``n`` training images held out for validation: a fixed random choice of ``range(total)`` (seed
    :data:`VAL_SEED`), sorted; the same for every run, variant and seed. ``ValueError`` unless 1 ≤ n < total."""
    if not 1 <= n < total:
        raise ValueError(f"val_split must be between 1 and {total - 1:,} (there are {total:,} training images); "
                         f"got {n:,}")
    return torch.randperm(total, generator=torch.Generator().manual_seed(VAL_SEED))[:n].sort().values


class Loaders(tuple):
    """``(train, test, info)`` as :func:`build_loaders` returns them, with the validation loader as ``.val``
    (``None`` without a validation split) and each part by name: ``.train``, ``.test``, ``.info``."""

    def __new__(cls, train, test, info: DatasetInfo, val=None):
        self = super().__new__(cls, (train, test, info))
        self.val = val
        return self

    train = property(lambda self: self[0])
    test = property(lambda self: self[1])
    info = property(lambda self: self[2])


def _split(total: int, val_split: int | None, train_subset: int | None) -> tuple[Tensor | None, Tensor | None]:
    """Indices of the training images to train on and to validate on (``None``: all of them, none). The validation
    images are drawn first, from the whole training set; a training subset is then drawn from the rest."""
    if val_split is None:
        return (None if train_subset is None else subset_indices(total, train_subset)), None
    val = validation_indices(total, val_split)
    rest = torch.ones(total, dtype=torch.bool)
    rest[val] = False
    rest = rest.nonzero()[:, 0]
    if train_subset is not None:
        rest = rest[subset_indices(len(rest), train_subset)]
    return rest, val


def subset_indices(total: int, n: int) -> Tensor:
    """A fixed random choice of ``min(n, total)`` of ``range(total)``, sorted; it depends on nothing else."""
    if n < 1:
        raise ValueError(f"train_subset must be at least 1, got {n}")
    if n > total:
        warnings.warn(f"--train-subset {n:,} is more than the {total:,} training images there are: training on all "
                      f"{total:,}", stacklevel=2)
    return torch.randperm(total, generator=torch.Generator().manual_seed(0))[:n].sort().values


def build_loaders(
    name: str = "fashion-mnist",
    *,
    data_dir: str | os.PathLike | None = None,
    batch_size: int = 128,
    eval_batch_size: int | None = None,
    workers: int = 2,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    device: str | torch.device = "cpu",
    augment: bool = True,
    download: bool = True,
    image_size: int | None = None,
    train_subset: int | None = None,
    val_split: int | None = None,
) -> Loaders:
    """``(train_loader, test_loader, info)`` for dataset ``name``; ``batch_size`` is per process.

    Tensor datasets are moved to ``device`` once and augmented there (``workers`` is unused);
    ImageFolder datasets use ``workers`` DataLoader processes and ``image_size`` (default: the registry's).
    ``train_subset=n`` trains on a fixed random subset of n images (:func:`subset_indices`, the same for
    every seed); the test set is always whole. ``val_split=n`` holds out n training images
    (:func:`validation_indices`, drawn before any subset) and serves them, unaugmented, as the returned
    :class:`Loaders`' ``.val``. The loaders have ``set_epoch(epoch)``.
    ``info.num_classes`` is read from the tree for ImageFolder data.
    """
    info = dataset_info(name)
    eval_batch_size = eval_batch_size or batch_size
    if info.in_memory:
        (train_x, train_y, test_x, test_y), folder, files = read_dataset(info.name, data_dir, download=download)
        info = replace(info, source=str(folder), fingerprint=fingerprint(files))
        keep, held = _split(len(train_x), val_split, train_subset)
        common = dict(mean=info.mean, std=info.std, seed=seed, rank=rank, world_size=world_size, device=device)
        val = None if held is None else TensorLoader(train_x[held], train_y[held], batch_size=eval_batch_size,
                                                     **common)
        if keep is not None:
            train_x, train_y = train_x[keep], train_y[keep]
        pad, flip = (info.crop_padding, info.flip) if augment else (0, False)
        train = TensorLoader(
            train_x, train_y, batch_size=batch_size, shuffle=True, crop_padding=pad, flip=flip, **common
        )
        test = TensorLoader(test_x, test_y, batch_size=eval_batch_size, **common)
        return Loaders(train, test, replace(info, in_chans=train_x.shape[1], image_size=train_x.shape[-1]), val)

    root = find_data(info.name, data_dir, download=download)
    from torchvision.datasets import ImageFolder  # imported late: it is slow, and not needed to fail early
    size = image_size or info.image_size
    train_set = ImageFolder(str(root / "train"), transform=folder_transforms(info, size, train=augment))
    test_set = ImageFolder(str(root / "val"), transform=folder_transforms(info, size, train=False))
    if train_set.classes != test_set.classes:
        raise ValueError(f"{root}: train/ and val/ hold different class folders; they must match")
    num_classes = len(train_set.classes)
    keep, held = _split(len(train_set), val_split, train_subset)
    val_set = None
    if held is not None:  # the held-out images, transformed as evaluation images are
        val_set = Subset(ImageFolder(str(root / "train"), transform=folder_transforms(info, size, train=False)),
                         held.tolist())
    if keep is not None:
        train_set = Subset(train_set, keep.tolist())
    common = dict(num_workers=workers, pin_memory=torch.device(device).type == "cuda", seed=seed, rank=rank)
    sampler = DistributedSampler(train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    train = FolderLoader(train_set, batch_size=batch_size, sampler=sampler, drop_last=True, **common)
    test_shard = Subset(test_set, range(rank, len(test_set), world_size))
    test = FolderLoader(test_shard, batch_size=eval_batch_size, **common)
    val = None if val_set is None else FolderLoader(Subset(val_set, range(rank, len(val_set), world_size)),
                                                    batch_size=eval_batch_size, **common)
    if len(train) == 0:
        raise ValueError(f"batch size {batch_size} per process is larger than the training set shard; lower it")
    counts = f"{len(train_set)} training and {len(test_set)} validation images in {num_classes} classes"
    return Loaders(train, test, replace(info, num_classes=num_classes, image_size=size, source=str(root),
                                        fingerprint=counts), val)
