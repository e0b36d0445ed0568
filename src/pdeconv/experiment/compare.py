"""Variants × seeds → runs → ``results.csv``, ``report.md`` and plots: the essay's ideas, ablated honestly.

An experiment directory holds::

    experiment.json           the shared training settings (everything but the variant and the seed)
    runs/VARIANT/seedN/       one ``pdeconv train`` run each (config.json, metrics.jsonl, checkpoint.pt, ...)
    results.csv               one row per run
    report.md                 per variant: mean ± std and 95% CI of test accuracy, cost, Welch t-test vs baseline
    accuracy_per_epoch.png    mean and min–max band over seeds, per variant
    accuracy_vs_flops.png     mean ± std of test accuracy against forward FLOPs per image

Rerunning the same command skips finished runs and resumes an unfinished one from its checkpoint; adding
variants or seeds trains only the new runs. A directory holding an experiment with other settings is
refused unless ``force``. Under ``torchrun`` every process runs the same loop (each run is DDP) and only
rank 0 writes the tables.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from pdeconv import engine
from pdeconv.data import DatasetInfo

__all__ = ["PRESETS", "Preset", "CompareResult", "compare", "build_model", "regularizer_for", "write_report"]

RESULT_COLUMNS = [
    "variant",
    "seed",
    "test_acc",
    "test_loss",
    "best_test_acc",
    "params",
    "flops",
    "train_img_per_s",
    "epochs",
    "wall_s",
]
_ESSAY_VARIANTS = "baseline,neumann,dw4,varcoef,seed,hyperbolic"


@dataclass(frozen=True)
class Preset:
    """A named bundle of experiment settings; explicit command-line options override its fields.

    ``variants`` and ``seeds`` are what ``pdeconv compare`` trains; the other fields (but ``description``) are
    :class:`~pdeconv.engine.TrainConfig` settings, shared by ``pdeconv compare`` and ``pdeconv train --preset``.
    """

    description: str
    variants: str = _ESSAY_VARIANTS
    seeds: int = 3
    model: str = "pde_resnet20"
    dataset: str = "fashion-mnist"
    epochs: int = 2
    batch_size: int = 128
    lr: float = 0.2
    schedule: str = "onecycle"
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    train_subset: int | None = None
    tta_flip: bool = False
    amp: str = "none"
    channels_last: bool = False

    def train_settings(self) -> dict[str, Any]:
        """The :class:`~pdeconv.engine.TrainConfig` keyword arguments of this preset, ``model`` included."""
        return {k: v for k, v in asdict(self).items() if k not in ("description", "variants", "seeds")}


PRESETS: dict[str, Preset] = {
    "quick": Preset(
        "about 10 minutes on a 2-core CPU: ResNet-20, 2 epochs on 5,000 training images, 3 seeds",
        batch_size=64,
        lr=0.1,
        train_subset=5_000,
    ),
    "fast": Preset(
        "one run reaches 93% on Fashion-MNIST in under 10 minutes on a 2-core CPU: ResNet-20, 10 epochs, "
        "one-cycle, label smoothing, flip TTA, bf16 where native, channels-last",
        epochs=10,
        lr=0.2,
        label_smoothing=0.1,
        tta_flip=True,
        amp="auto",
        channels_last=True,
    ),
    "full": Preset(
        "the serious run: ResNet-20, 30 epochs on all 60,000 images, cosine schedule, 3 seeds",
        epochs=30,
        lr=0.1,
        schedule="cosine",
        label_smoothing=0.1,
        tta_flip=True,
        amp="auto",
        channels_last=True,
    ),
}


@dataclass
class CompareResult:
    """Where the experiment's files are and its per-run rows."""

    out: Path
    rows: list[dict[str, Any]]
    table: str


# ----------------------------------------------------------------------------------------------- runs


def build_model(model: str, variant: str, info: DatasetInfo, **kwargs: Any) -> torch.nn.Module:
    """``pdeconv.models.create(model, variant=variant)`` sized for the dataset ``info``."""
    from pdeconv.models import create

    return create(model, variant=variant, num_classes=info.num_classes, in_chans=info.in_chans, **kwargs)


def regularizer_for(variant: str):
    """The hyperbolicity penalty when the variant carries a penalty weight, else ``None``; and the weight."""
    from pdeconv.models import get_variant

    weight = get_variant(variant).penalty_weight
    if weight <= 0:
        return None, 0.0
    from pdeconv.regularize import hyperbolicity_penalty

    return hyperbolicity_penalty, weight


def _run_config(base: engine.TrainConfig, variant: str, seed: int, out: Path, force: bool) -> engine.TrainConfig:
    _, weight = regularizer_for(variant)
    return replace(base, variant=variant, seed=seed, out=str(out), penalty_weight=weight, resume=False, force=force)


def _state(run_dir: Path) -> str:
    """``finished``, ``partial`` (a checkpoint to resume from) or ``new``."""
    if (run_dir / engine.CONFIG).exists() and (run_dir / engine.METRICS).exists():
        try:
            if engine.run_summary(run_dir)["finished"]:
                return "finished"
        except (ValueError, FileNotFoundError, KeyError):
            pass
    return "partial" if (run_dir / engine.CHECKPOINT).exists() else "new"


def _shared_settings(config: engine.TrainConfig) -> dict[str, Any]:
    skip = {"variant", "seed", "out", "resume", "force", "progress", "workers", "data_dir", "penalty_weight", "device"}
    return {k: v for k, v in asdict(config).items() if k not in skip}


def _claim_directory(out: Path, config: engine.TrainConfig, force: bool) -> None:
    meta = out / "experiment.json"
    settings = _shared_settings(config)
    if meta.exists() and not force:
        try:
            old = json.loads(meta.read_text())
        except json.JSONDecodeError:
            raise ValueError(f"{meta} is unreadable; use another --out or --force") from None
        diffs = [f"{k}: {old.get(k)!r} → {v!r}" for k, v in settings.items() if old.get(k) != v]
        if diffs:
            raise ValueError(
                f"{out} holds an experiment with other settings ({'; '.join(diffs)}); "
                "use another --out, the same settings, or --force to retrain it"
            )
    elif not meta.exists() and out.is_dir() and any(out.iterdir()) and not force:
        raise ValueError(f"{out} is not empty and holds no pdeconv experiment; use another --out or --force")
    out.mkdir(parents=True, exist_ok=True)
    _write_text(meta, json.dumps(settings, indent=2) + "\n")


def _write_text(path: Path, text: str) -> None:
    """Atomic text write (the engine's checkpoint writer)."""
    from pdeconv import _checkpoint

    _checkpoint.write_text(path, text)


def _rank0() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _broadcast(value: Any) -> Any:
    if dist.is_available() and dist.is_initialized():
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return value


def compare(
    variants: Sequence[str],
    seeds: Sequence[int],
    out: str | Path,
    *,
    base: engine.TrainConfig,
    force: bool = False,
) -> CompareResult:
    """Train every (variant, seed) with the settings of ``base`` and write results, report and plots.

    ``variants`` are pdeconv variant specs (``"seed+neumann"`` allowed); the run directory of each is
    ``out/runs/VARIANT/seedN``. Returns the rows of ``results.csv`` and the printed table.
    """
    from pdeconv.models import get_variant

    variants = list(dict.fromkeys(variants))
    for v in variants:
        get_variant(v)  # unknown names fail before anything is trained
    if not variants or not seeds:
        raise ValueError("compare needs at least one variant and one seed")
    out = Path(out)
    if _rank0():
        _claim_directory(out, base, force)
    total = len(variants) * len(seeds)
    for i, (variant, seed) in enumerate(((v, s) for v in variants for s in seeds), 1):
        run_dir = out / "runs" / variant / f"seed{seed}"
        state = _broadcast(_state(run_dir) if _rank0() else None)
        if state == "finished" and not force:
            if _rank0():
                print(f"[{i}/{total}] {variant} seed {seed}: finished earlier, skipped", flush=True)
            continue
        config = _run_config(base, variant, seed, run_dir, force)
        config = replace(config, resume=state == "partial" and not force)
        if _rank0():
            how = "resuming" if config.resume else "training"
            print(f"[{i}/{total}] {variant} seed {seed}: {how} → {run_dir}", flush=True)
        reg, _ = regularizer_for(variant)
        engine.train(
            config,
            lambda info, v=variant: build_model(base.model, v, info),
            regularizer=reg,
        )
    rows, table = [], ""
    if _rank0():
        rows = collect(out, variants, seeds, base)
        table = write_report(out, rows, base)
        print(table, flush=True)
        print(f"wrote {out / 'results.csv'}, {out / 'report.md'} and plots", flush=True)
    return CompareResult(out, rows, table)


# ----------------------------------------------------------------------------------------------- results


def _flops_per_image(model_name: str, variant: str, info: DatasetInfo) -> tuple[int, int]:
    from pdeconv.models import profile

    model = build_model(model_name, variant, info)
    p = profile(model, (1, info.in_chans, info.image_size, info.image_size))
    return p.params, p.flops


def _info_of(run_dir: Path) -> DatasetInfo:
    meta = json.loads((run_dir / engine.CONFIG).read_text())
    known = {f.name for f in fields(DatasetInfo)}
    d = {k: (tuple(v) if isinstance(v, list) else v) for k, v in meta["dataset"].items() if k in known}
    return DatasetInfo(**d)


def collect(out: Path, variants: Sequence[str], seeds: Sequence[int], base: engine.TrainConfig) -> list[dict]:
    """One row per run (``RESULT_COLUMNS``), written to ``out/results.csv``."""
    rows, cost = [], {}
    for variant in variants:
        for seed in seeds:
            run_dir = out / "runs" / variant / f"seed{seed}"
            s = engine.run_summary(run_dir)
            if variant not in cost:
                cost[variant] = _flops_per_image(base.model, variant, _info_of(run_dir))
            params, flops = cost[variant]
            rows.append(
                {
                    "variant": variant,
                    "seed": seed,
                    "test_acc": s["test_acc"],
                    "test_loss": s["test_loss"],
                    "best_test_acc": s["best_test_acc"],
                    "params": params,
                    "flops": flops,
                    "train_img_per_s": s["train_img_per_s"],
                    "epochs": s["epochs"],
                    "wall_s": s["wall_s"],
                }
            )
    with open(out / "results.csv.tmp", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (out / "results.csv.tmp").replace(out / "results.csv")
    return rows


@dataclass
class _Stats:
    n: int
    mean: float
    std: float | None
    ci: tuple[float, float] | None


def _stats(values: list[float]) -> _Stats:
    from scipy import stats

    n, mean = len(values), statistics.fmean(values)
    if n < 2:
        return _Stats(n, mean, None, None)
    std = statistics.stdev(values)
    half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
    return _Stats(n, mean, std, (mean - half, mean + half))


def _welch_p(a: list[float], b: list[float]) -> float | None:
    from scipy import stats

    if len(a) < 2 or len(b) < 2 or (statistics.pstdev(a) == 0 and statistics.pstdev(b) == 0):
        return None
    with warnings.catch_warnings():  # near-identical samples: scipy warns, the p-value is still meaningful
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def summary_table(rows: list[dict[str, Any]]) -> str:
    """The per-variant Markdown table of the report (also printed to the terminal)."""
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["variant"], []).append(r)
    ref = [r["test_acc"] for r in by.get("baseline", [])]
    lines = [
        "| variant | runs | test acc % (mean ± std) | 95% CI | Δ vs baseline | p (Welch) | params | "
        "MFLOPs/img | img/s (train) | wall s/run |",
        "|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for variant, rs in by.items():
        accs = [r["test_acc"] for r in rs]
        st = _stats(accs)
        std = "" if st.std is None else f" ± {100 * st.std:.2f}"
        ci = "–" if st.ci is None else f"[{_pct(st.ci[0])}, {_pct(st.ci[1])}]"
        if variant == "baseline" or not ref:
            delta, p = "–", "–"
        else:
            delta = f"{100 * (st.mean - statistics.fmean(ref)):+.2f}"
            pv = _welch_p(accs, ref)
            p = "–" if pv is None else f"{pv:.3f}"
        lines.append(
            f"| {variant} | {st.n} | {_pct(st.mean)}{std} | {ci} | {delta} | {p} | {rs[0]['params']:,} | "
            f"{rs[0]['flops'] / 1e6:.1f} | {statistics.fmean(r['train_img_per_s'] for r in rs):.0f} | "
            f"{statistics.fmean(r['wall_s'] for r in rs):.0f} |"
        )
    return "\n".join(lines)


def _histories(out: Path, rows: list[dict]) -> dict[str, list[list[float]]]:
    curves: dict[str, list[list[float]]] = {}
    for r in rows:
        path = out / "runs" / r["variant"] / f"seed{r['seed']}" / engine.METRICS
        accs = [json.loads(line)["test_acc"] for line in path.read_text().splitlines() if line.strip()]
        curves.setdefault(r["variant"], []).append(accs)
    return curves


def _plots(out: Path, rows: list[dict]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    files = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for variant, curves in _histories(out, rows).items():
        n = min(len(c) for c in curves)
        a = 100 * np.array([c[:n] for c in curves])
        epochs = np.arange(1, n + 1)
        ax.plot(epochs, a.mean(0), marker="o", label=variant)
        ax.fill_between(epochs, a.min(0), a.max(0), alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("test accuracy per epoch (mean, band = min–max over seeds)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    files.append(out / "accuracy_per_epoch.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["variant"], []).append(r)
    for variant, rs in by.items():
        accs = [100 * r["test_acc"] for r in rs]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        ax.errorbar(rs[0]["flops"] / 1e6, statistics.fmean(accs), yerr=std, fmt="o", capsize=3, label=variant)
    ax.set_xlabel("forward MFLOPs per image")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("accuracy vs compute (mean ± std over seeds)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    files.append(out / "accuracy_vs_flops.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)
    return files


def _learned_pde(out: Path, rows: list[dict]) -> str:
    """One line per variant from :func:`pdeconv.analysis.variant_summary` on its first seed's weights."""
    from pdeconv.analysis import analyze_model, model_from_checkpoint, variant_summary

    lines = []
    seen = set()
    for r in rows:
        if r["variant"] in seen:
            continue
        seen.add(r["variant"])
        ckpt = out / "runs" / r["variant"] / f"seed{r['seed']}" / engine.CHECKPOINT
        s = variant_summary(analyze_model(model_from_checkpoint(ckpt)))
        parts = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in s.items() if v is not None)
        lines.append(f"- **{r['variant']}** (seed {r['seed']}): {parts}")
    return "\n".join(lines)


def write_report(out: Path, rows: list[dict[str, Any]], base: engine.TrainConfig) -> str:
    """Write ``report.md`` and the plots; return the summary table."""
    table = summary_table(rows)
    plots = _plots(out, rows)
    meta = json.loads((out / "runs" / rows[0]["variant"] / f"seed{rows[0]['seed']}" / engine.CONFIG).read_text())
    settings = _shared_settings(base)
    text = [
        f"# {base.model} on {base.dataset}: {len({r['variant'] for r in rows})} variants × "
        f"{len({r['seed'] for r in rows})} seeds",
        "",
        f"Device: {meta.get('device_name', meta.get('device'))}; torch {meta.get('torch_version')}; "
        f"pdeconv {meta.get('pdeconv_version')}; started {meta.get('started')}.",
        "",
        "Test accuracy at the last epoch. 95% CI: Student t over seeds. Δ and p: difference of means to "
        "`baseline` and Welch's t-test (unequal variances); with 3 seeds only large differences are significant.",
        "",
        table,
        "",
        "Settings shared by every run: " + ", ".join(f"`{k}={v}`" for k, v in settings.items()) + ".",
        "",
        "## The learned PDE (first seed of each variant)",
        "",
        _learned_pde(out, rows),
        "",
        "## Plots",
        "",
        *[f"![{p.stem}]({p.name})" for p in plots],
        "",
        "Every run's files (config.json, metrics.jsonl, TensorBoard events, checkpoint) are under `runs/`.",
        "",
    ]
    _write_text(out / "report.md", "\n".join(text))
    return table
