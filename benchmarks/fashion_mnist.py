"""Time-to-accuracy on Fashion-MNIST: test accuracy against wall time, baseline and each variant, several seeds.

Each (variant, seed) is one :func:`pdeconv.engine.train` run with the settings of a preset
(:data:`pdeconv.run.PRESETS`: ``quick``, ``fast``, ``full``; on a GPU always with bf16 autocast and
channels-last); an ``on_epoch_end`` hook records the wall time since the run started (model building, data
loading and evaluation included) and the test accuracy. Runs go seed by seed through all variants, so a change
in machine load reaches every variant alike. The table gives, per variant, the final test accuracy (mean ± std
over seeds), the wall time, and the time at which a run first reached each target accuracy (mean over the seeds
that reached it).

    python benchmarks/fashion_mnist.py [--preset quick|fast|full] [--variants ...] [--seeds N] [--first-seed K]
                                       [--smoke]

``--smoke`` trains on a tiny generated Fashion-MNIST (IDX files in a temporary folder), so it needs no data.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
from _common import parser, record, run, setup, table

from pdeconv import engine
from pdeconv import run as run_module
from pdeconv.data import write_synthetic_fashion_mnist
from pdeconv.models import get_variant
from pdeconv.run import PRESETS


def train_once(config: engine.TrainConfig) -> dict:
    """Train once (:func:`pdeconv.run.train`); return the (wall s, test accuracy) curve and the summary."""
    curve: list[tuple[float, float]] = []
    start = time.perf_counter()
    summary = run_module.train(
        config, on_epoch_end=lambda r: curve.append((time.perf_counter() - start, r["test_acc"]))
    )
    return {"curve": curve, "wall_s": time.perf_counter() - start, "test_acc": summary["test_acc"],
            "img_per_s": summary["train_img_per_s"]}


def summarize(variant: str, runs: list[dict], targets: list[float]) -> dict:
    accs = [r["test_acc"] for r in runs]
    row = {
        "variant": variant, "seeds": len(runs), "acc": 100 * statistics.fmean(accs),
        "acc_std": 100 * statistics.stdev(accs) if len(accs) > 1 else None,
        "wall_s": statistics.fmean(r["wall_s"] for r in runs),
        "img_per_s": statistics.fmean(r["img_per_s"] for r in runs),
    }
    for t in targets:
        reached = [next((s for s, a in r["curve"] if a >= t), None) for r in runs]
        reached = [s for s in reached if s is not None]
        row[f"to_{t:g}"] = f"{statistics.fmean(reached):.0f} s ({len(reached)}/{len(runs)})" if reached else "–"
    return row


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    p.add_argument("--variants", default=None, help="comma-separated (default: the preset's)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds N (default: the preset's)")
    p.add_argument("--first-seed", type=int, default=0, help="the seeds are first-seed .. first-seed + N - 1")
    p.add_argument("--targets", default="0.80,0.85,0.90", help="test accuracies to time, comma-separated")
    p.add_argument("--data-dir", default=None, help="folder holding the Fashion-MNIST IDX files")
    p.add_argument("--out", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    args = p.parse_args()
    device = setup(args)
    preset = PRESETS[args.preset]
    variants = (args.variants or ("baseline,seed" if args.smoke else preset.variants)).split(",")
    for v in variants:
        get_variant(v)  # unknown names fail before anything trains
    seeds = range(args.first_seed, args.first_seed + (1 if args.smoke else args.seeds or preset.seeds))
    targets = [float(t) for t in args.targets.split(",")]
    gpu = device.type == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir
        if args.smoke:
            data_dir = str(write_synthetic_fashion_mnist(Path(tmp) / "data"))
        out = args.out or Path(tmp) / "runs"
        settings = {"epochs": 1, "batch_size": 16, "train_subset": None} if args.smoke else {}
        if gpu:
            settings.update(amp="bf16", channels_last=True)
        base = run_module.make_config(preset=args.preset, data_dir=data_dir, device=str(device), progress=False,
                                      force=True, threads=str(torch.get_num_threads()), **settings)
        runs: dict[str, list[dict]] = {v: [] for v in variants}
        for seed in seeds:
            for v in variants:
                config = run_module.variant_config(base, v, seed, out / v / f"seed{seed}")
                print(f"{v} seed {seed}", flush=True)
                runs[v].append(train_once(config))
    rows = [summarize(v, rs, targets) for v, rs in runs.items()]
    columns = [
        ("variant", "variant", ""), ("seeds", "seeds", "d"), ("acc", "test acc %", ".2f"), ("acc_std", "± std", ".2f"),
        ("wall_s", "wall s/run", ".0f"), ("img_per_s", "train img/s", ".0f"),
        *[(f"to_{t:g}", f"s to {100 * t:g}%", "") for t in targets],
    ]
    print(table(rows, columns))
    settings = {"preset": args.preset, "config": {k: v for k, v in vars(base).items() if k not in ("out", "data_dir")},
                "variants": variants, "seeds": list(seeds), "targets": targets, "smoke": args.smoke}
    results = [{**row, "runs": runs[row["variant"]]} for row in rows]
    print(f"\nappended to {record('fashion_mnist', args, device, settings, results)}")


if __name__ == "__main__":
    run(main)
