"""Per-channel mean and standard deviation of the image datasets pdeconv knows (floor 0).

The normalisation a model trained on each expects: :mod:`pdeconv.data` normalises with it, and the models'
timm configurations (``pretrained_cfg["mean"]``, ``["std"]``) state it. Values are in [0, 1] pixel units.
"""

from __future__ import annotations

__all__ = ["STATS"]

#: dataset name → (mean, std), one value per channel
STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "fashion-mnist-rts": ((0.1989,), (0.3122,)),  # of its training images: `python benchmarks/rts_dataset.py`
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
