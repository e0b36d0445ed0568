"""The datasets pdeconv knows: what a model and the training loop need to know of each (floor 2)."""

from __future__ import annotations

from dataclasses import dataclass

from pdeconv.errors import PdeconvError
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


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry of ``name``; ValueError listing the valid names otherwise."""
    key = name.lower().replace("_", "-")
    if key not in DATASETS:
        raise PdeconvError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}")
    return DATASETS[key]
