"""The batch reduction in the backward of variable coefficients: ``Σ_n g_n·u_n``, four exact ways, side by side.

``VariableCoefficients`` multiplies u (N, C, H, W) by a field a (1, C, H, W); the field's gradient sums
``g·u`` over the batch. The candidates, each from the product ``g·u`` on the fast recipe's activations
(batch 128, channels-last; ResNet-20's three stage shapes), interleaved, medians:

* ``sum f32``: ``torch.sum(g·u, 0, dtype=float32)``; ``sum``: ``(g·u).sum(0)``;
* ``loop``: one ``addcmul_`` per sample into a field-sized buffer (pdeconv before 2026-11-30);
* ``matmul``: ``ones(1, N) @ (g·u)`` viewed (N, pixels) in memory order (what ``_Modulate`` uses).

The error column is the largest relative difference from the float64 sum.

    python benchmarks/varcoef_reduction.py [--repeats 30] [--smoke]
"""

from __future__ import annotations

import torch
from _common import interleaved, median_ms, parser, record, run, setup, table

SHAPES = [(16, 28), (32, 14), (64, 7)]


def candidates(g: torch.Tensor, u: torch.Tensor) -> dict:
    N, C, H, W = g.shape

    def rows(p: torch.Tensor) -> torch.Tensor:
        return p.permute(0, 2, 3, 1).reshape(N, -1)  # channels-last memory order: a view

    def loop() -> torch.Tensor:
        gg, uu = rows(g), rows(u)
        acc = gg[0] * uu[0]
        for n in range(1, N):
            acc.addcmul_(gg[n], uu[n])
        return acc.view(H, W, C).permute(2, 0, 1)

    return {
        "sum f32": lambda: torch.sum(g * u, 0, dtype=torch.float32),
        "sum": lambda: (g * u).sum(0),
        "loop": loop,
        "matmul": lambda: (g.new_ones(1, N) @ rows(g * u)).view(H, W, C).permute(2, 0, 1),
    }


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=30, help="timed rounds (median)")
    p.add_argument("--precisions", default="bf16,fp32", help="bf16 and/or fp32")
    args = p.parse_args()
    device = setup(args)
    batch, shapes, repeats = (128, SHAPES, args.repeats) if not args.smoke else (4, [(2, 3)], 1)
    rows = []
    for precision in args.precisions.split(","):
        dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[precision]
        for channels, size in shapes:
            gen = torch.Generator().manual_seed(0)
            g, u = (torch.randn(batch, channels, size, size, generator=gen).to(device, dtype)
                    .contiguous(memory_format=torch.channels_last) for _ in range(2))
            exact = (g.double() * u.double()).sum(0)
            fns = candidates(g, u)
            times = interleaved(fns, repeats=repeats, warmup=3, device=device)
            for name, fn in fns.items():
                error = float((fn().double() - exact).abs().max() / exact.abs().max())
                rows.append({"precision": precision, "shape": f"{batch}×{channels}×{size}×{size}", "way": name,
                             "ms": median_ms(times[name]), "rel_error": error,
                             "round_ms": [1e3 * t for t in times[name]]})
    print(table(rows, [("precision", "precision", ""), ("shape", "g, u", ""), ("way", "way", ""),
                       ("ms", "ms", ".3f"), ("rel_error", "rel. error", ".1e")]))
    settings = {"batch": batch, "shapes": shapes, "repeats": repeats, "smoke": args.smoke}
    print(f"\nappended to {record('varcoef_reduction', args, device, settings, rows)}")


if __name__ == "__main__":
    run(main)
