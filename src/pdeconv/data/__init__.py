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

The package by idea: :mod:`~pdeconv.data.registry` (the datasets and what they are), :mod:`~pdeconv.data.formats`
(IDX and CIFAR files), :mod:`~pdeconv.data.locate` (where the data is, downloads, ``fashion-mnist-rts``) and
:mod:`~pdeconv.data.loaders` (batches, augmentation, subsets, the validation split).
"""

from pdeconv.data.formats import read_cifar_batch, read_idx, stripes, write_idx, write_synthetic_fashion_mnist
from pdeconv.data.loaders import (
    VAL_SEED,
    FolderLoader,
    Loaders,
    TensorLoader,
    build_loaders,
    folder_transforms,
    random_crop,
    random_flip,
    subset_indices,
    validation_indices,
)
from pdeconv.data.locate import (
    RTS,
    SYSTEM_DIRS,
    cache_dir,
    find_data,
    fingerprint,
    load_tensors,
    read_dataset,
    rts_folder,
    search_dirs,
)
from pdeconv.data.registry import DATASETS, DatasetInfo, dataset_info

__all__ = [
    "DATASETS",
    "RTS",
    "SYSTEM_DIRS",
    "VAL_SEED",
    "DatasetInfo",
    "FolderLoader",
    "Loaders",
    "TensorLoader",
    "build_loaders",
    "cache_dir",
    "dataset_info",
    "find_data",
    "fingerprint",
    "folder_transforms",
    "load_tensors",
    "random_crop",
    "random_flip",
    "read_cifar_batch",
    "read_dataset",
    "read_idx",
    "rts_folder",
    "search_dirs",
    "stripes",
    "subset_indices",
    "validation_indices",
    "write_idx",
    "write_synthetic_fashion_mnist",
]
