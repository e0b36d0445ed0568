"""Every essay variant's training speed relative to the baseline, at the settings a user trains with.

* ResNet-20 at the ``fast`` recipe's train step: batch 128, 28×28, 1 channel, channels-last, bf16 autocast where
  the device computes bf16 natively (``--amp auto``), float32 elsewhere, SGD;
* ResNet-50 at batch 8, 128×128 on the CPU (64 at 224×224 on a GPU), the same memory format and precision,
  against torchvision's ``resnet50`` (``baseline`` is the same network built by pdeconv).

Each suite runs its networks interleaved in one process (``benchmarks/models.py``: rotating order, median of
per-round ratios) with pdeconv's layers choosing their paths by measurement, as in training. The table gives
images/s relative to the reference (``speed ×``, the issue's target is ≥ 0.9 for ResNet-20), and for ResNet-50
the time ratio over the FLOP ratio (``time/FLOPs``, 1 = the variant costs exactly its arithmetic).

    python benchmarks/speed.py [--repeats 7] [--suite resnet20|resnet50|all] [--smoke]
"""

from __future__ import annotations

import torch
from _common import parser, record, run, setup, table
from models import measure_suite

from pdeconv.engine import resolve_amp
from pdeconv.models import get_variant

VARIANTS = {
    "resnet20": "neumann,periodic,dw4,order2,varcoef,seed,hyperbolic,quasilinear,wave",
    "resnet50": "baseline,neumann,periodic,dw4,order2,varcoef,seed",
}
COLUMNS = [
    ("suite", "suite", ""), ("input", "input", ""), ("precision", "precision", ""), ("model", "model", ""),
    ("step_ms", "step ms", ".0f"), ("img_per_s", "img/s", ".0f"), ("speed", "speed ×", ".2f"),
    ("flop_ratio", "FLOPs ×", ".3f"), ("time_per_flop_ratio", "time/FLOPs", ".3f"),
]


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--suite", choices=("resnet20", "resnet50", "all"), default="all")
    p.add_argument("--variants20", default=VARIANTS["resnet20"], help="ResNet-20 variants, comma-separated")
    p.add_argument("--variants50", default=VARIANTS["resnet50"], help="ResNet-50 variants, comma-separated")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (they include the path measurement)")
    args = p.parse_args()
    device = setup(args)
    precision = "bf16" if resolve_amp("auto", device) == "bf16" else "fp32"
    gpu = device.type == "cuda"
    sizes = {"resnet20": (128, 28), "resnet50": (64, 224) if gpu else (8, 128)}
    repeats, warmup = args.repeats, args.warmup
    if args.smoke:
        sizes, repeats, warmup = {"resnet20": (4, 8), "resnet50": (2, 64)}, 1, 1  # 64²: layer4 2×2, reflectable
    suites = ["resnet20", "resnet50"] if args.suite == "all" else [args.suite]
    rows = []
    for suite in suites:
        variants = (args.variants20 if suite == "resnet20" else args.variants50).split(",")
        if args.smoke:
            variants = variants[:2]
        for v in variants:
            get_variant(v)  # unknown names fail before anything runs
        batch, size = sizes[suite]
        rows += measure_suite(suite, variants, batch=batch, size=size, channels_last=True, precision=precision,
                              repeats=repeats, warmup=warmup, device=device)
    for r in rows:
        r["speed"] = 1 / r["time_ratio"]
    print(table(rows, COLUMNS))
    settings = {"suites": suites, "sizes": sizes, "precision": precision, "format": "channels_last",
                "repeats": repeats, "warmup": warmup, "smoke": args.smoke, "threads": torch.get_num_threads()}
    print(f"\nappended to {record('speed', args, device, settings, rows)}")


if __name__ == "__main__":
    run(main)
