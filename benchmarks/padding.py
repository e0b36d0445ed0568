"""A padded 3×3 convolution, forward + backward, under each boundary condition and each way to pad.

At the fast recipe's activations (batch 128, channels-last, bf16 autocast; ResNet-20's three stage shapes), a C→C
3×3 convolution with: zero padding inside the convolution (the baseline), ``F.pad`` then the convolution
(reflect, circular, replicate), a ``torch.cat`` of border slices then the convolution, and pdeconv's ``ring``
way for each mode (a zero padding in the input's memory format with its ghost rows and columns copied in place,
an in-place backward). Interleaved, medians, ms per forward + backward.

``--parts`` times the pieces instead, to say where a padded convolution's extra time goes: the reflect padding
alone, and the convolution's forward, input gradient and weight gradient (``aten.convolution_backward``) for the
zero-padded ("same") convolution of u and the unpadded ("valid") one of the reflect-padded u, on the same numbers.

    python benchmarks/padding.py [--repeats 20] [--parts] [--smoke]
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


def parts(u: torch.Tensor, w: torch.Tensor, g: torch.Tensor) -> dict:
    """The pieces of a reflect-padded 3×3 convolution against the zero-padded one's, one call each (no autograd)."""
    backward = torch.ops.aten.convolution_backward.default
    padded = F.pad(u, (1, 1, 1, 1), mode="reflect")

    def grads(x: torch.Tensor, padding: int, mask: list[bool]):
        return lambda: backward(g, x, w, None, [1, 1], [padding] * 2, [1, 1], False, [0, 0], 1, mask)

    return {
        "pad": lambda: F.pad(u, (1, 1, 1, 1), mode="reflect"),
        "forward same": lambda: F.conv2d(u, w, None, 1, 1), "forward valid": lambda: F.conv2d(padded, w),
        "input grad same": grads(u, 1, [True, False, False]),
        "input grad valid": grads(padded, 0, [True, False, False]),
        "weight grad same": grads(u, 1, [False, True, False]),
        "weight grad valid": grads(padded, 0, [False, True, False]),
    }


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=20, help="timed rounds (median)")
    p.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    p.add_argument("--parts", action="store_true", help="time the pieces of a reflect-padded convolution instead")
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

        if args.parts:
            dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
            u, wd = u0.to(dtype), w.detach().to(dtype)
            g = torch.randn_like(u)
            candidates = parts(u, wd, g)
        else:
            candidates = {name: step(fn) for name, fn in ways(w).items()}
        times = interleaved(candidates, repeats=repeats, warmup=2, device=device)
        row = {"shape": f"{batch}×{channels}×{size}×{size}", **{n: median_ms(t) for n, t in times.items()}}
        rows.append(row)
    probe = torch.zeros(1, 1, 3, 3)
    names = list(parts(probe, probe, probe) if args.parts else ways(probe))
    print(table(rows, [("shape", "activations", ""), *[(n, n, ".2f") for n in names]]))
    settings = {"batch": batch, "shapes": shapes, "repeats": repeats, "precision": args.precision,
                "parts": args.parts, "smoke": args.smoke}
    print(f"\nappended to {record('padding', args, device, settings, rows)}")


if __name__ == "__main__":
    run(main)
