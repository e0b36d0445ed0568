"""Train every (variant, seed) of an experiment: skip finished runs, resume unfinished ones, then report.

A directory holding an experiment with other settings is refused unless ``force``. Under ``torchrun`` every
process runs the same loop (each run is DDP) and only rank 0 writes the tables.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from pdeconv import _checkpoint, engine, run
from pdeconv.distributed import agree, on_main, start, stop
from pdeconv.experiment.report import shared_settings, write_report
from pdeconv.experiment.results import collect, run_dir

__all__ = ["CompareResult", "compare"]


@dataclass
class CompareResult:
    """Where the experiment's files are and its per-run rows."""

    out: Path
    rows: list[dict[str, Any]]
    table: str


def _state(run: Path) -> str:
    """``finished``, ``partial`` (a checkpoint to resume from) or ``new``."""
    if (run / engine.CONFIG).exists() and (run / engine.METRICS).exists():
        try:
            if engine.run_summary(run)["finished"]:
                return "finished"
        except (ValueError, FileNotFoundError, KeyError):
            pass
    return "partial" if (run / engine.CHECKPOINT).exists() else "new"


def _claim_directory(out: Path, config: engine.TrainConfig, force: bool) -> None:
    engine.check_out_dir(out)
    meta = out / "experiment.json"
    settings = shared_settings(config)
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
    _checkpoint.write_text(meta, json.dumps(settings, indent=2) + "\n")


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
    ``out/runs/VARIANT/seedN``; each run is :func:`pdeconv.run.variant_config` of ``base``. Returns the rows of
    ``results.csv`` and the printed table.
    """
    from pdeconv.models import get_variant

    variants = list(dict.fromkeys(variants))
    for v in variants:
        get_variant(v)  # unknown names fail before anything is trained
    if not variants or not seeds:
        raise ValueError("compare needs at least one variant and one seed")
    out = Path(out)
    # under torchrun: one process group for the whole experiment, every decision made by rank 0 and shared
    procs = start(base.device, deterministic=base.deterministic)
    on_main(lambda: _claim_directory(out, base, force), main=procs.main)
    say = print if procs.main else (lambda *args, **kwargs: None)
    total = len(variants) * len(seeds)
    for i, (variant, seed) in enumerate(((v, s) for v in variants for s in seeds), 1):
        directory = run_dir(out, variant, seed)
        state = on_main(lambda d=directory: _state(d), main=procs.main)
        if state == "finished" and not force:
            say(f"[{i}/{total}] {variant} seed {seed}: finished earlier, skipped", flush=True)
            continue
        config = replace(run.variant_config(base, variant, seed, directory),
                         resume=state == "partial" and not force, force=force)
        say(f"[{i}/{total}] {variant} seed {seed}: {'resuming' if config.resume else 'training'} → {directory}",
            flush=True)
        if base.compile:  # each variant is a new graph: start from an empty compile cache, not its limit
            torch._dynamo.reset()
        run.train(config)
    rows, table = [], ""
    if procs.main:
        rows = collect(out, variants, seeds, base)
        table = write_report(out, rows, base)
        say(table, flush=True)
        say(f"wrote {out / 'results.csv'}, {out / 'report.md'} and plots", flush=True)
    agree(None)  # every rank waits for rank 0's tables, then leaves together
    stop(procs)
    return CompareResult(out, rows, table)
