"""Loaders: whole-batch augmentation for tensors in memory, seeded DataLoaders for image folders, and the
training subset and validation split."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler, Subset

from pdeconv.data.locate import find_data, fingerprint, read_dataset
from pdeconv.data.registry import DatasetInfo, dataset_info
from pdeconv.errors import PdeconvError

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
            raise PdeconvError("TensorLoader needs uint8 images (N, C, H, W) and N labels")
        self.device = torch.device(device)
        self.images, self.labels = images.to(self.device), labels.to(self.device)
        self.batch_size, self.shuffle = batch_size, shuffle
        self.crop_padding, self.flip = crop_padding, flip
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1)
        if shuffle and len(self) == 0:
            raise PdeconvError(
                f"batch size {batch_size} per process is larger than the {self._shard_size()} training "
                "images each process gets; use a smaller `batch_size`"
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
        raise PdeconvError(f"val_split must be between 1 and {total - 1:,} (there are {total:,} training images); "
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
        raise PdeconvError(f"train_subset must be at least 1, got {n}")
    if n > total:
        warnings.warn(f"`train_subset` {n:,} is more than the {total:,} training images there are: training on all "
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
        raise PdeconvError(f"{root}: train/ and val/ hold different class folders; they must match")
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
        raise PdeconvError(f"batch size {batch_size} per process is larger than the training set shard; lower it")
    counts = f"{len(train_set)} training and {len(test_set)} validation images in {num_classes} classes"
    return Loaders(train, test, replace(info, num_classes=num_classes, image_size=size, source=str(root),
                                        fingerprint=counts), val)
