"""A padded 3×3 convolution, forward + backward, under each boundary condition and each way to pad.

At the fast recipe's activations (batch 128, channels-last, bf16 autocast; ResNet-20's three stage shapes), a C→C
3×3 convolution with: zero padding inside the convolution (the baseline), ``F.pad`` then the convolution
(reflect, circular, replicate), a ``torch.cat`` of border slices then the convolution, and pdeconv's ``ring``
way for each mode (a zero padding in the input's memory format with its ghost rows and columns copied in place,
an in-place backward). Interleaved, medians, ms per forward + backward.

    python benchmarks/padding.py [--repeats 20] [--smoke]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from _common import autocast, interleaved, median_ms, parser, record, run, setup, table

from pdeconv.boundary import _ring_pad

SHAPES = [(16, 28), (32, 14), (64, 7)]


def cat_pad(u: torch.Tensor, mode: str) -> torch.Tensor:
    """1-pixel padding assembled from border slices with ``torch.cat`` (rows, then columns)."""
    rows = {"reflect": (slice(1, 2), slice(-2, -1)), "circular": (slice(-1, None), slice(0, 1)),
            "replicate": (slice(0, 1), slice(-1, None))}[mode]
    u = torch.cat([u[..., rows[0], :], u, u[..., rows[1], :]], dim=-2)
    return torch.cat([u[..., rows[0]], u, u[..., rows[1]]], dim=-1)


def ways(w: torch.Tensor) -> dict:
    ring = {f"{mode} ring": (lambda u, m=mode: F.conv2d(_ring_pad(u, (1, 1, 1, 1), m), w))
            for mode in ("reflect", "circular", "replicate")}
    pads = {f"{mode} F.pad": (lambda u, m=mode: F.conv2d(F.pad(u, (1, 1, 1, 1), mode=m), w))
            for mode in ("reflect", "circular", "replicate")}
    cats = {f"{mode} cat": (lambda u, m=mode: F.conv2d(cat_pad(u, m), w)) for mode in ("reflect", "circular")}
    return {"zeros": lambda u: F.conv2d(u, w, padding=1), **pads, **cats, **ring}


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=20, help="timed rounds (median)")
    p.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    args = p.parse_args()
    device = setup(args)
    batch, shapes, repeats = (128, SHAPES, args.repeats) if not args.smoke else (2, [(2, 5)], 1)
    rows = []
    for channels, size in shapes:
        gen = torch.Generator().manual_seed(0)
        u0 = torch.randn(batch, channels, size, size, generator=gen).contiguous(memory_format=torch.channels_last)
        w = torch.randn(channels, channels, 3, 3, generator=gen).contiguous(memory_format=torch.channels_last)
        u0, w = u0.to(device), w.to(device).requires_grad_()

        def step(fn, u0=u0):
            def run_once():
                u = u0.detach().requires_grad_()
                with autocast(args.precision, device):
                    out = fn(u)
                out.backward(torch.ones_like(out))

            return run_once

        candidates = {name: step(fn) for name, fn in ways(w).items()}
        times = interleaved(candidates, repeats=repeats, warmup=2, device=device)
        row = {"shape": f"{batch}×{channels}×{size}×{size}", **{n: median_ms(t) for n, t in times.items()}}
        rows.append(row)
    names = list(ways(torch.zeros(1, 1, 3, 3)))
    print(table(rows, [("shape", "activations", ""), *[(n, n, ".2f") for n in names]]))
    settings = {"batch": batch, "shapes": shapes, "repeats": repeats, "precision": args.precision,
                "smoke": args.smoke}
    print(f"\nappended to {record('padding', args, device, settings, rows)}")


if __name__ == "__main__":
    run(main)
