"""Train-step time, images/s, FLOPs and memory of PDE-ResNets against the networks they modify.

* ``resnet50``: torchvision's ``resnet50`` against ``pde_resnet50`` variants (``baseline`` is a check: the same
  network built by pdeconv). CPU: batch 8 at 128×128 in fp32 NCHW (the setting of the issue's target: the
  ``seed`` variant's time ratio at most 1.05× its FLOP ratio); GPU: batch 64 at 224×224, bf16 autocast,
  channels_last.
* ``resnet20``: ``pde_resnet20`` variants against its ``baseline`` at 28×28 (1 channel, 10 classes), batch 128.

A train step is ``zero_grad``, forward, cross-entropy (plus the variant's hyperbolicity penalty, for
``hyperbolic``), backward and an SGD step (lr 0, so the weights and the work stay the same from step to step).
The networks run interleaved, ratios are medians of per-round ratios (``_common``). FLOPs: forward,
:func:`pdeconv.models.profile`; a step is 3× that, so the FLOP ratio of a step is the forward's. ``time/FLOPs``
= time ratio / FLOP ratio: 1 means the variant costs exactly its arithmetic.
``--plain`` adds each variant once more as ``VARIANT[plain]``, run without pdeconv's CPU fast paths
(``_common.plain_layers``), to measure what they gain. ``--compile`` times every network (the reference too)
through ``torch.compile``, which fuses elementwise work (BatchNorm, ReLU, the coefficient fields) into the
neighbouring kernels; the warmup rounds absorb the compilation.
Memory: bytes autograd saves for the backward; on GPU also the peak allocated during a step.

    python benchmarks/models.py [--suite resnet50|resnet20|all] [--repeats 7] [--threads 1] [--profile] [--smoke]
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
import torchvision
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

from pdeconv.models import (
    get_variant,
    pde_resnet20,
    pde_resnet50,
    profile,
    saved_activation_bytes,
    variant_penalty_weight,
)
from pdeconv.regularize import hyperbolicity_penalty

SUITES = {
    # name: (reference, default variants, classes, in_chans)
    "resnet50": ("torchvision", "baseline,seed,dw4,varcoef,order2,neumann", 1000, 3),
    "resnet20": ("baseline", "dw4,order2,varcoef,seed,neumann,quasilinear", 10, 1),
}


def build(suite: str, variant: str) -> nn.Module:
    _, _, classes, chans = SUITES[suite]
    if suite == "resnet50":
        return torchvision.models.resnet50() if variant == "torchvision" else pde_resnet50(variant=variant)
    return pde_resnet20(variant=variant, num_classes=classes, in_chans=chans)


_optimizers: dict[int, torch.optim.Optimizer] = {}


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str, device: torch.device,
               penalty_weight: float = 0.0):
    """A closure running one train step (with the variant's hyperbolicity penalty, as training adds it); a model
    timed twice (``[plain]``) keeps one optimizer state."""
    optimizer = _optimizers.setdefault(id(model), torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision, device):
            loss = F.cross_entropy(model(x), y)
        if penalty_weight > 0:
            loss = loss + penalty_weight * hyperbolicity_penalty(model)
        loss.backward()
        optimizer.step()

    return step


def measure_suite(suite, variants, *, batch, size, channels_last, precision, repeats, warmup, device,
                  profile_ops=False, plain=False, compiled=False):
    reference, _, classes, chans = SUITES[suite]
    names = [reference, *[v for v in variants if v != reference]]
    names += [v + PLAIN for v in names[1:] if plain]  # the same networks without pdeconv's CPU fast paths
    torch.manual_seed(0)
    models = {v: build(suite, v) for v in names if not v.endswith(PLAIN)}
    models |= {v: models[v.removesuffix(PLAIN)] for v in names}
    size_in = (batch, chans, size, size)
    flops = {v: profile(m, size_in).flops for v, m in models.items()}
    x0 = torch.randn(size_in, device=device)
    y = torch.randint(0, classes, (batch,), device=device)
    steps, saved, peak, inputs = {}, {}, {}, {}
    for v, model in models.items():
        model, x = to_format(model.to(device).train(), x0, channels_last)
        inputs[v] = x
        with autocast(precision, device):
            forward = maybe_plain(lambda m=model, x=x: F.cross_entropy(m(x), y), v)
            saved[v] = saved_activation_bytes(forward, model.parameters())
        runner = torch.compile(model) if compiled else model  # memory and the profile: eager
        weight = 0.0 if v == "torchvision" else variant_penalty_weight(v.removesuffix(PLAIN))
        steps[v] = maybe_plain(train_step(runner, x, y, precision, device, weight), v)
        steps[v]()  # gradients and optimizer state exist before the peak is measured
        peak[v] = peak_bytes(steps[v], device)
    times = interleaved(steps, repeats=repeats, warmup=warmup, device=device)
    fwd_bwd = {v: maybe_plain(forward_backward(models[v], inputs[v], y, precision, device), v) for v in names}
    profiles = op_profile(fwd_bwd) if profile_ops else {}
    rows = []
    for v in names:
        r, f = ratio(times, v, reference), flops[v] / flops[reference]
        ms = median_ms(times[v])
        rows.append({
            "suite": suite, "input": "×".join(map(str, size_in)),
            "format": "channels_last" if channels_last else "nchw", "precision": precision,
            "model": v + (" [compiled]" if compiled else ""),
            "step_ms": ms, "img_per_s": batch / ms * 1e3, "time_ratio": r,
            "flops": flops[v], "gflops_per_img": flops[v] / batch / 1e9, "flop_ratio": f, "time_per_flop_ratio": r / f,
            "saved_mb": saved[v] / 2**20, "saved_ratio": saved[v] / saved[reference],
            "peak_mb": None if peak[v] is None else peak[v] / 2**20,
            "round_ms": [1e3 * t for t in times[v]],  # every timed round, in order: the ratios' raw data
            **({"profile_ms": profiles[v]} if profiles else {}),
        })
    _optimizers.clear()
    return rows


def _category(name: str, shapes: list) -> str:
    """Which kind of work a profiled op is (convolutions by their weight's shape)."""
    if "conv" in name and "backward" in name or name in ("aten::mkldnn_convolution", "aten::_slow_conv2d_forward"):
        weight = shapes[2] if "backward" in name else shapes[1]
        if len(weight) != 4:
            return "other"
        if weight[1] == 1 and weight[2] > 1:
            return "conv depthwise"
        return "conv 1×1" if weight[2] == 1 else "conv dense k×k"
    return next((kind for key, kind in _KINDS if key in name), "other")


_KINDS = [  # (substring of the op name, kind of work)
    ("batch_norm", "batch norm"), ("relu", "relu"), ("clamp_min", "relu"), ("threshold_backward", "relu"),
    ("aten::mul", "mul, addcmul: a(x, y)·u"), ("addcmul", "mul, addcmul: a(x, y)·u"),
    ("reflection_pad", "reflect padding"), ("replication_pad", "replicate padding"),
    ("copy_", "copies, fills"), ("fill_", "copies, fills"), ("aten::add_", "residual add"),
]


def forward_backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str, device: torch.device):
    def step() -> None:
        model.zero_grad(set_to_none=True)
        with autocast(precision, device):
            loss = F.cross_entropy(model(x), y)
        loss.backward()

    return step


def op_profile(steps: dict[str, Callable[[], None]], rounds: int = 3) -> dict[str, dict[str, float]]:
    """Per candidate, milliseconds per call by kind of work (torch.profiler, self CPU time). The candidates are
    profiled in turn, one call per profiling session, ``rounds`` times, so they see the same machine load."""
    from torch.profiler import ProfilerActivity, profile

    totals: dict[str, dict[str, float]] = {label: {} for label in steps}
    for step in steps.values():
        step()
    for _ in range(rounds):
        for label, step in steps.items():
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                step()
            for e in prof.key_averages(group_by_input_shape=True):
                kind = _category(e.key, e.input_shapes) if e.key.startswith("aten::") else "other"
                totals[label][kind] = totals[label].get(kind, 0.0) + e.self_cpu_time_total / 1e3 / rounds
    return {label: dict(sorted(t.items(), key=lambda kv: -kv[1])) for label, t in totals.items()}


COLUMNS = [
    ("suite", "suite", ""), ("input", "input", ""), ("format", "format", ""), ("precision", "precision", ""),
    ("model", "model", ""), ("step_ms", "step ms", ".0f"), ("img_per_s", "img/s", ".0f"),
    ("time_ratio", "time ×", ".3f"), ("gflops_per_img", "GFLOPs/img", ".3f"), ("flop_ratio", "FLOPs ×", ".3f"),
    ("time_per_flop_ratio", "time/FLOPs", ".3f"), ("saved_mb", "saved MB", ".0f"), ("saved_ratio", "memory ×", ".2f"),
    ("peak_mb", "GPU peak MB", ".0f"),
]


def print_profiles(rows: list[dict]) -> None:
    """Per suite, format and precision: ms per step by kind of work, one column per model."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["suite"], r["input"], r["format"], r["precision"]), []).append(r)
    for key, rs in groups.items():
        kinds = list(dict.fromkeys(k for r in rs for k in r["profile_ms"]))
        lines = [{"kind": k, **{r["model"]: r["profile_ms"].get(k, 0.0) for r in rs}} for k in kinds]
        lines.append({"kind": "total", **{r["model"]: sum(r["profile_ms"].values()) for r in rs}})
        print(f"\nms per forward+backward by kind of work (torch.profiler, self CPU time): {' '.join(key)}")
        print(table(lines, [("kind", "kind", ""), *[(r["model"], r["model"], ".1f") for r in rs]]))


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--suite", choices=(*SUITES, "all"), default="all")
    p.add_argument("--variants", default=None, help="pdeconv variants, comma-separated (default: per suite)")
    p.add_argument("--formats", default=None, help="nchw and/or channels_last (default: CPU nchw, GPU channels_last)")
    p.add_argument("--precisions", default=None, help="fp32 and/or bf16 autocast (default: fp32 on CPU, bf16 on GPU)")
    p.add_argument("--batch50", type=int, default=None, help="ResNet-50 batch (default: 8 on CPU, 64 on GPU)")
    p.add_argument("--size50", type=int, default=None, help="ResNet-50 image size (default: 128 on CPU, 224 on GPU)")
    p.add_argument("--batch20", type=int, default=128, help="ResNet-20 batch")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    p.add_argument("--profile", action="store_true", help="also print ms per step by kind of work (torch.profiler)")
    p.add_argument("--plain", action="store_true", help="also time each variant without pdeconv's CPU fast paths")
    p.add_argument("--compile", action="store_true",
                   help="time torch.compile'd networks, reference included (fuses the elementwise work)")
    args = p.parse_args()
    device = setup(args)
    gpu = device.type == "cuda"
    formats = (args.formats or ("channels_last" if gpu else "nchw")).split(",")
    precisions = (args.precisions or ("bf16" if gpu else "fp32")).split(",")
    if set(formats) - {"nchw", "channels_last"} or set(precisions) - {"fp32", "bf16"}:
        raise ValueError("--formats takes nchw, channels_last; --precisions takes fp32, bf16 (comma-separated)")
    suites = list(SUITES) if args.suite == "all" else [args.suite]
    sizes = {
        "resnet50": (args.batch50 or (64 if gpu else 8), args.size50 or (224 if gpu else 128)),
        "resnet20": (args.batch20, 28),
    }
    if args.smoke:
        sizes = {"resnet50": (2, 32), "resnet20": (4, 8)}
    repeats, warmup = (1, 0) if args.smoke else (args.repeats, args.warmup)
    jobs = []
    for suite in suites:
        variants = (args.variants or ("seed" if args.smoke else SUITES[suite][1])).split(",")
        for v in variants:
            get_variant(v)  # unknown names fail before anything runs
        jobs += [(suite, variants, f, q) for f in formats for q in precisions]
    rows = []
    for suite, variants, fmt, precision in tqdm(jobs, desc="model suites", disable=None):
        batch, size = sizes[suite]
        rows += measure_suite(
            suite, variants, batch=batch, size=size, channels_last=fmt == "channels_last", precision=precision,
            repeats=repeats, warmup=warmup, device=device, profile_ops=args.profile, plain=args.plain,
            compiled=args.compile,
        )
    print(table(rows, COLUMNS))
    if args.profile:
        print_profiles(rows)
    settings = {"suites": suites, "sizes": sizes, "plain": args.plain, "formats": formats, "precisions": precisions,
                "repeats": repeats, "warmup": warmup, "smoke": args.smoke, "compile": args.compile}
    print(f"\nappended to {record('models', args, device, settings, rows)}")


if __name__ == "__main__":
    run(main)
