"""``results.csv``: one row per finished run of an experiment, with its cost (parameters, FLOPs per image) and
what its trained model learned (hyperbolicity score, operators used per channel, share of orders ≥ 3)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from pdeconv import engine
from pdeconv.data import DatasetInfo

__all__ = ["LEARNED_PDE", "RESULT_COLUMNS", "collect", "flops_per_image", "learned_pde_summary", "run_dir"]

RESULT_COLUMNS = [
    "variant",
    "seed",
    "test_acc",
    "test_loss",
    "best_test_acc",
    "val_acc",
    "val_loss",
    "params",
    "flops",
    "train_img_per_s",
    "epochs",
    "wall_s",
    "hyperbolicity",
    "depthwise_span_dim",
    "order_3plus_share",
    "field_variation",
    "field_sign_changing",
    "run",
]
#: from the learned-PDE summary (:func:`pdeconv.analysis.variant_summary`) of each run's trained model
_LEARNED = {"hyperbolicity": "hyperbolicity", "depthwise_span_dim": "depthwise_span_dim",
            "order_3plus_share": "order_3+", "field_variation": "field_variation",
            "field_sign_changing": "field_sign_changing"}


def run_dir(out: str | os.PathLike, variant: str, seed: int, runs: str | os.PathLike | None = None) -> Path:
    """Where the run of ``variant`` with ``seed`` lives: ``RUNS/VARIANT/seedN``, with ``RUNS`` the shared run
    store ``runs`` when given, else ``out/runs`` in experiment directory ``out``."""
    return (Path(runs) if runs is not None else Path(out) / "runs") / variant / f"seed{seed}"


#: The learned-PDE summary of a run, kept beside it: a report can be rebuilt without the checkpoint.
LEARNED_PDE = "learned_pde.json"


def learned_pde_summary(run: Path) -> dict[str, Any] | None:
    """:func:`pdeconv.analysis.variant_summary` of the run's trained model, read from ``run/learned_pde.json``
    when that file belongs to this training of the run (its start time and epoch count) and holds every
    quantity of ``results.csv`` (or the checkpoint is gone), else computed from the checkpoint and saved there;
    ``None`` with neither."""
    from pdeconv import storage
    from pdeconv.analysis import analyze_model, variant_summary
    from pdeconv.run import model_from_run

    summary = engine.run_summary(run)
    which = {"started": json.loads((run / engine.CONFIG).read_text()).get("started"), "epochs": summary["epochs"]}
    cached = run / LEARNED_PDE
    checkpoint = (run / engine.CHECKPOINT).is_file()
    if cached.is_file():
        kept = json.loads(cached.read_text())
        # a summary from before a quantity was added is recomputed where the checkpoint is at hand
        if kept.get("run") == which and (not checkpoint or set(_LEARNED.values()) <= set(kept["summary"])):
            return kept["summary"]
    if not checkpoint:
        return None
    learned = variant_summary(analyze_model(model_from_run(run)))
    learned = {k: (float(v) if isinstance(v, float) else v) for k, v in learned.items()}
    storage.write_text(cached, json.dumps({"run": which, "summary": learned}, indent=2) + "\n")
    return learned


def flops_per_image(model_name: str, variant: str, info: DatasetInfo) -> tuple[int, int]:
    """Parameters and forward FLOPs per image of the variant's model at the dataset's image size.

    FLOPs per image are the cost of one more image in a batch (batch of 2 minus batch of 1), so work done once
    per batch whatever its size (the coefficient fields a(x, y) of variable-coefficient layers) is not charged
    to every image.
    """
    from pdeconv.models import profile
    from pdeconv.run import build_model

    model = build_model(model_name, variant, info)
    size = (info.in_chans, info.image_size, info.image_size)
    one, two = profile(model, (1, *size)), profile(model, (2, *size))
    return one.params, two.flops - one.flops


def _info_of(run: Path) -> DatasetInfo:
    meta = json.loads((run / engine.CONFIG).read_text())
    known = {f.name for f in fields(DatasetInfo)}
    d = {k: (tuple(v) if isinstance(v, list) else v) for k, v in meta["dataset"].items() if k in known}
    return DatasetInfo(**d)


def collect(out: Path, variants: Sequence[str], seeds: Sequence[int] | Mapping[str, Sequence[int]],
            base: engine.TrainConfig, *, runs: str | os.PathLike | None = None) -> list[dict]:
    """One row per run (``RESULT_COLUMNS``), variant by variant in seed order, written to ``out/results.csv``
    (atomically). ``seeds``: the same for every variant, or ``{variant: seeds}``; ``runs``: the run store
    (:func:`run_dir`). The ``run`` column is the run's directory relative to ``out``."""
    from pdeconv import storage

    rows: list[dict[str, Any]] = []
    cost: dict[str, tuple[int, int]] = {}
    for variant in variants:
        for seed in sorted(seeds[variant] if isinstance(seeds, Mapping) else seeds):
            run = run_dir(out, variant, seed, runs)
            s = engine.run_summary(run)
            if variant not in cost:
                cost[variant] = flops_per_image(base.model, variant, _info_of(run))
            params, flops = cost[variant]
            learned = learned_pde_summary(run)
            rows.append(
                {
                    "variant": variant,
                    "seed": seed,
                    "test_acc": s["test_acc"],
                    "test_loss": s["test_loss"],
                    "best_test_acc": s["best_test_acc"],
                    "val_acc": s.get("val_acc"),
                    "val_loss": s.get("val_loss"),
                    "params": params,
                    "flops": flops,
                    "train_img_per_s": s["train_img_per_s"],
                    "epochs": s["epochs"],
                    "wall_s": s["wall_s"],
                    **{column: (learned or {}).get(key) for column, key in _LEARNED.items()},
                    "run": os.path.relpath(run, out),
                }
            )
    storage.write_csv(Path(out) / "results.csv", RESULT_COLUMNS, rows)
    return rows
