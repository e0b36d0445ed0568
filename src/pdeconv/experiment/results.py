"""``results.csv``: one row per finished run of an experiment, with its cost (parameters, FLOPs per image)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from pdeconv import engine
from pdeconv.data import DatasetInfo

__all__ = ["RESULT_COLUMNS", "collect", "flops_per_image", "run_dir"]

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


def run_dir(out: Path, variant: str, seed: int) -> Path:
    """Where the run of ``variant`` with ``seed`` lives in experiment directory ``out``."""
    return Path(out) / "runs" / variant / f"seed{seed}"


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


def collect(out: Path, variants: Sequence[str], seeds: Sequence[int], base: engine.TrainConfig) -> list[dict]:
    """One row per run (``RESULT_COLUMNS``), written to ``out/results.csv`` (atomically)."""
    from pdeconv import _checkpoint

    rows: list[dict[str, Any]] = []
    cost: dict[str, tuple[int, int]] = {}
    for variant in variants:
        for seed in seeds:
            run = run_dir(out, variant, seed)
            s = engine.run_summary(run)
            if variant not in cost:
                cost[variant] = flops_per_image(base.model, variant, _info_of(run))
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
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _checkpoint.write_text(Path(out) / "results.csv", text.getvalue())
    return rows
