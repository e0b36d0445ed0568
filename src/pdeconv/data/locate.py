"""Where a dataset is: the search order, the download, the files read (their fingerprint), and
``fashion-mnist-rts`` built from Fashion-MNIST on first use."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pdeconv.data.formats import read_cifar_batch, read_idx, write_idx
from pdeconv.data.registry import dataset_info
from pdeconv.errors import PdeconvError

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
    "fashion-mnist": "install it with `apt-get install dataset-fashion-mnist`, pass `data_dir`, a folder holding the "
    "four IDX files (train-images-idx3-ubyte[.gz], ...), or run once with internet access to download it",
    "cifar10": "pass `data_dir`, a folder holding cifar-10-batches-py/ (torchvision's format), "
    "or run once with internet access to download it",
    "cifar100": "pass `data_dir`, a folder holding cifar-100-python/ (torchvision's format), "
    "or run once with internet access to download it",
    "imagenet": "pass `data_dir`, a folder DIR with DIR/train/<class>/*.JPEG and DIR/val/<class>/*.JPEG "
    "(torchvision's ImageFolder layout; the validation images sorted into class folders)",
    "imagefolder": "pass `data_dir`, a folder DIR with DIR/train/<class>/* and DIR/val/<class>/*",
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
            raise FileNotFoundError(f"data directory {root} {what}; pass an existing folder as `data_dir`, or leave "
                                    f"`data_dir` out to search the usual places for {name}")
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
        raise PdeconvError(f"dataset {info.name!r} is an image-folder dataset, not held in memory")
    folder = find_data(info.name, data_dir, download=download)
    out, files = [], []
    for split in ("train", "test"):
        if info.name in ("fashion-mnist", "fashion-mnist-rts"):
            images_file, labels_file = (_idx_path(folder, f) for f in _FMNIST_FILES[split])
            files += [images_file, labels_file]
            x, y = read_idx(images_file), read_idx(labels_file)
            if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
                raise PdeconvError(f"{images_file}: expected N×H×W images and N labels, got {x.shape}, {y.shape}")
            x = x[:, None]
        else:
            files += [folder / f for f in _CIFAR_FILES[info.name][split]]
            batches = [read_cifar_batch(folder / f) for f in _CIFAR_FILES[info.name][split]]
            key = "labels" if info.name == "cifar10" else "fine_labels"
            try:
                x = np.concatenate([np.asarray(b["data"], np.uint8) for b in batches]).reshape(-1, 3, 32, 32)
                y = np.concatenate([np.asarray(b[key]) for b in batches])
            except (KeyError, ValueError) as e:
                raise PdeconvError(f"{folder}: malformed {info.name} batch ({e!r})") from None
        out += [torch.from_numpy(np.ascontiguousarray(x, np.uint8)), torch.from_numpy(y.astype(np.int64))]
    return tuple(out), folder, files
