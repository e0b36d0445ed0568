"""fashion-mnist-rts: its figure of examples, its normalisation and how much of each image reaches the border.

    python benchmarks/rts_dataset.py            # writes docs/img/fashion-mnist-rts.png, prints the statistics

The statistics are those docs/results.md quotes (border contact, plain against rts) and the mean and std that
``pdeconv.normalization.STATS["fashion-mnist-rts"]`` holds (of the training images, pixel values in [0, 1]).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from pdeconv import data  # noqa: E402
from pdeconv.storage import write_figure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def border_statistics(images: torch.Tensor, bright: int = 128) -> dict[str, float]:
    """Of the outermost ring of pixels of uint8 images (N, 1, H, W): its mean grey level, the share of its pixels
    above ``bright``, and the share of images with at least 3 such pixels."""
    x = images[:, 0].float()
    ring = torch.cat([x[:, 0], x[:, -1], x[:, 1:-1, 0], x[:, 1:-1, -1]], 1)
    return {"ring_mean": ring.mean().item(), "ring_bright": (ring > bright).float().mean().item(),
            "images_touching": ((ring > bright).sum(1) >= 3).float().mean().item()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="folder holding Fashion-MNIST (default: the usual search)")
    p.add_argument("--out", default=str(ROOT / "docs" / "img" / "fashion-mnist-rts.png"))
    args = p.parse_args()
    plain = data.load_tensors("fashion-mnist", args.data_dir)
    rts = data.load_tensors("fashion-mnist-rts", args.data_dir)
    draws = np.load(data.rts_folder(args.data_dir) / "draws.npz")
    x = rts[0].double() / 255
    print(f"fashion-mnist-rts training images: mean {x.mean():.4f}, std {x.std():.4f}")
    for name, tensors in (("fashion-mnist", plain), ("fashion-mnist-rts", rts)):
        for split, images in (("train", tensors[0]), ("test", tensors[2])):
            s = border_statistics(images)
            print(f"{name} {split}: border ring mean grey {s['ring_mean']:.1f}, ring pixels > 128: "
                  f"{s['ring_bright']:.1%}, images with ≥ 3 of them: {s['images_touching']:.1%}")
    n = 10
    fig, axes = plt.subplots(2, n, figsize=(1.3 * n, 3.1))
    for i in range(n):
        for row, tensors in enumerate((plain, rts)):
            axes[row, i].imshow(tensors[2][i, 0].numpy(), cmap="gray", vmin=0, vmax=255)
            axes[row, i].set_xticks([])
            axes[row, i].set_yticks([])
        axes[1, i].set_xlabel(f"{draws['test_angle'][i]:+.0f}°, ×{draws['test_scale'][i]:.2f}\n"
                              f"({draws['test_shift'][i][0]:+.1f}, {draws['test_shift'][i][1]:+.1f}) px", fontsize=7)
    axes[0, 0].set_ylabel("plain", fontsize=9)
    axes[1, 0].set_ylabel("rts", fontsize=9)
    fig.suptitle("fashion-mnist-rts: test images 0–9 before and after their fixed draw "
                 "(angle counter-clockwise, scale, shift (dx, dy))", fontsize=9)
    fig.tight_layout()
    write_figure(args.out, fig)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
