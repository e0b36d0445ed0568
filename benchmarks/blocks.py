"""Forward+backward time and memory of each PDE block against the torchvision block it replaces.

* ``imagenet``: torchvision's ``Bottleneck`` against pdeconv's ``Bottleneck`` with each variant, at the
  identity blocks of ResNet-50's four stages for 224×224 inputs (56×56 with 256 channels in and width 64,
  28×28/512/128, 14×14/1024/256, 7×7/2048/512); batch 8 on CPU, 64 on GPU.
* ``small``: torchvision's ``BasicBlock`` against pdeconv's ``BasicBlock`` at ResNet-20's stages
  (16, 32, 64 channels) for 28×28 Fashion-MNIST and 32×32 CIFAR inputs; batch 128.

Every block is timed in training mode on an input that needs its gradient: ``out = block(x)``,
``out.backward(g)``, in NCHW and channels_last, fp32 and bf16 autocast. Per (shape, format, precision) the
candidates run interleaved and each ratio is the median of per-round ratios to torchvision's block
(``_common``). FLOPs: forward, :func:`pdeconv.models.profile` (a training step is 3× that, the same ratio).
Memory: bytes autograd saves for the backward (same format and precision), and on GPU the peak allocated.
``VariableCoefficients`` overhead: ``varcoef`` against ``baseline`` and ``seed`` against ``dw4``. ``--plain``
adds each variant as ``VARIANT[plain]``, without pdeconv's CPU fast paths (``_common.plain_layers``).

    python benchmarks/blocks.py [--suite imagenet|small|all] [--repeats 7] [--threads 1] [--smoke]
"""

from __future__ import annotations

import torch
import torchvision.models.resnet as tv
from _common import (
    PLAIN,
    autocast,
    interleaved,
    maybe_plain,
    median_ms,
    parser,
    peak_bytes,
    ratio,
    record,
    run,
    setup,
    table,
    to_format,
)
from torch import nn
from tqdm.auto import tqdm

from pdeconv.models import BasicBlock, Bottleneck, get_variant, profile, saved_activation_bytes

VARIANTS = "baseline,seed,dw4,order2,varcoef,neumann,quasilinear"
REFERENCE = "torchvision"
#: (name, H=W, channels in, planes); a Bottleneck's width is ``planes`` and its output ``4·planes``
IMAGENET = [("stage1", 56, 256, 64), ("stage2", 28, 512, 128), ("stage3", 14, 1024, 256), ("stage4", 7, 2048, 512)]
SMALL = [
    ("fmnist1", 28, 16, 16), ("fmnist2", 14, 32, 32), ("fmnist3", 7, 64, 64),
    ("cifar1", 32, 16, 16), ("cifar2", 16, 32, 32), ("cifar3", 8, 64, 64),
]
SMOKE = {"imagenet": [("tiny", 6, 32, 8)], "small": [("tiny", 6, 8, 8)]}
VARCOEF_PAIRS = [("varcoef", "baseline"), ("seed", "dw4")]  # with fields / without


def build(suite: str, channels: int, planes: int, variant: str) -> nn.Module:
    """The identity block (stride 1, no downsample) of the suite: torchvision's, or pdeconv's with ``variant``."""
    if suite == "imagenet":
        return tv.Bottleneck(channels, planes) if variant == REFERENCE else Bottleneck(
            channels, planes, options=get_variant(variant)
        )
    return tv.BasicBlock(channels, planes) if variant == REFERENCE else BasicBlock(
        channels, planes, options=get_variant(variant)
    )


def train_step(block: nn.Module, x: torch.Tensor, precision: str, device: torch.device):
    """A closure running forward and backward once (gradients of the parameters and of x)."""
    grad: list[torch.Tensor] = []

    def step() -> None:
        block.zero_grad(set_to_none=True)
        x.grad = None
        with autocast(precision, device):
            out = block(x)
        if not grad:
            grad.append(torch.randn_like(out))
        out.backward(grad[0])

    return step


def measure_shape(suite, shape, variants, *, batch, formats, precisions, repeats, warmup, device, plain=False):
    """One row per (format, precision, candidate) for one block shape."""
    name, size, channels, planes = shape
    torch.manual_seed(0)
    names = [REFERENCE, *variants]
    names += [v + PLAIN for v in variants if plain]  # the same blocks without pdeconv's CPU fast paths
    blocks = {v: build(suite, channels, planes, v) for v in names if not v.endswith(PLAIN)}
    blocks |= {v: blocks[v.removesuffix(PLAIN)] for v in names}
    size_in = (batch, channels, size, size)
    flops = {v: profile(b, size_in).flops for v, b in blocks.items()}
    rows = []
    for channels_last in formats:
        for precision in precisions:
            x0 = torch.randn(size_in, device=device)
            steps, saved, peak = {}, {}, {}
            for v, block in blocks.items():
                block, x = to_format(block.to(device).train(), x0, channels_last)
                x.requires_grad_(True)
                with autocast(precision, device):
                    saved[v] = saved_activation_bytes(maybe_plain(lambda b=block, x=x: b(x), v), block.parameters())
                steps[v] = maybe_plain(train_step(block, x, precision, device), v)
                steps[v]()  # allocate gradients before the peak is measured
                peak[v] = peak_bytes(steps[v], device)
            times = interleaved(steps, repeats=repeats, warmup=warmup, device=device)
            fmt = "channels_last" if channels_last else "nchw"
            for v in names:
                r, f = ratio(times, v, REFERENCE), flops[v] / flops[REFERENCE]
                rows.append({
                    "suite": suite, "shape": name, "input": "×".join(map(str, size_in)), "format": fmt,
                    "precision": precision, "block": v, "ms": median_ms(times[v]), "time_ratio": r,
                    "flops": flops[v], "flop_ratio": f, "time_per_flop_ratio": r / f,
                    "saved_mb": saved[v] / 2**20, "saved_ratio": saved[v] / saved[REFERENCE],
                    "peak_mb": None if peak[v] is None else peak[v] / 2**20,
                    "round_ms": [1e3 * t for t in times[v]],  # every timed round, in order: the ratios' raw data
                })
            pairs = VARCOEF_PAIRS + [(a + PLAIN, b + PLAIN) for a, b in VARCOEF_PAIRS]
            for with_fields, without in pairs:
                if with_fields in times and without in times:
                    rows.append({
                        "suite": suite, "shape": name, "input": "×".join(map(str, size_in)), "format": fmt,
                        "precision": precision, "block": f"{with_fields}/{without}",
                        "varcoef_overhead": ratio(times, with_fields, without) - 1,
                    })
    return rows


COLUMNS = [
    ("suite", "suite", ""), ("shape", "shape", ""), ("input", "input N×C×H×W", ""), ("format", "format", ""),
    ("precision", "precision", ""), ("block", "block", ""), ("ms", "fwd+bwd ms", ".1f"),
    ("time_ratio", "time ×", ".2f"), ("flop_ratio", "FLOPs ×", ".2f"), ("time_per_flop_ratio", "time/FLOPs", ".2f"),
    ("saved_mb", "saved MB", ".1f"), ("saved_ratio", "memory ×", ".2f"), ("peak_mb", "GPU peak MB", ".1f"),
]
OVERHEAD_COLUMNS = [
    ("suite", "suite", ""), ("shape", "shape", ""), ("format", "format", ""), ("precision", "precision", ""),
    ("block", "with/without fields", ""), ("varcoef_overhead", "VariableCoefficients adds", "+.1%"),
]


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--suite", choices=("imagenet", "small", "all"), default="all")
    p.add_argument("--variants", default=VARIANTS, help="pdeconv variants, comma-separated")
    p.add_argument("--shapes", default=None,
                   help="only these shape names (e.g. stage1,fmnist1), comma-separated (default: all)")
    p.add_argument("--formats", default="nchw,channels_last", help="memory formats, comma-separated")
    p.add_argument("--precisions", default="fp32,bf16", help="fp32 and/or bf16 (autocast), comma-separated")
    p.add_argument("--batch", type=int, default=None, help="batch (default: imagenet 8 on CPU, 64 on GPU; small 128)")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    p.add_argument("--plain", action="store_true", help="also time each variant without pdeconv's CPU fast paths")
    args = p.parse_args()
    device = setup(args)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        get_variant(v)  # unknown names fail before anything runs
    formats = [f.strip() for f in args.formats.split(",")]
    if set(formats) - {"nchw", "channels_last"}:
        raise ValueError(f"unknown format in {args.formats!r}; choose from nchw, channels_last")
    precisions = [q.strip() for q in args.precisions.split(",")]
    if set(precisions) - {"fp32", "bf16"}:
        raise ValueError(f"unknown precision in {args.precisions!r}; choose from fp32, bf16")
    suites = ["imagenet", "small"] if args.suite == "all" else [args.suite]
    repeats, warmup = (1, 0) if args.smoke else (args.repeats, args.warmup)
    jobs = []
    for suite in suites:
        shapes = SMOKE[suite] if args.smoke else (IMAGENET if suite == "imagenet" else SMALL)
        if args.shapes:
            wanted = set(args.shapes.split(","))
            shapes = [s for s in shapes if s[0] in wanted]
        batch = args.batch or (2 if args.smoke else 128 if suite == "small" else 64 if device.type == "cuda" else 8)
        jobs += [(suite, shape, batch) for shape in shapes]
    if not jobs:
        raise ValueError(f"no shape matches --shapes {args.shapes}; names: {', '.join(s[0] for s in IMAGENET + SMALL)}")
    rows = []
    for suite, shape, batch in tqdm(jobs, desc="block shapes", disable=None):
        rows += measure_shape(
            suite, shape, variants, batch=batch, formats=[f == "channels_last" for f in formats],
            precisions=precisions, repeats=repeats, warmup=warmup, device=device, plain=args.plain,
        )
    timed = [r for r in rows if "time_ratio" in r]
    overhead = [r for r in rows if "varcoef_overhead" in r]
    print(table(timed, COLUMNS))
    if overhead:
        print()
        print(table(overhead, OVERHEAD_COLUMNS))
    settings = {"suites": suites, "variants": variants, "plain": args.plain, "formats": formats,
                "precisions": precisions, "repeats": repeats, "warmup": warmup, "smoke": args.smoke}
    print(f"\nappended to {record('blocks', args, device, settings, rows)}")


if __name__ == "__main__":
    run(main)
