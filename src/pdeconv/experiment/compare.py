"""Train every (variant, seed) of an experiment: skip finished runs, resume unfinished ones, then report.

A directory holding an experiment with other settings is refused unless ``force``. Under ``torchrun`` every
process runs the same loop (each run is DDP); rank 0 decides (which runs are finished, which need more seeds)
and writes the tables.

Several ``compare`` commands may share a run store (``runs``) at once: each run is trained under an exclusive
lock on its directory (``flock``; rank 0 holds it), and a run another process is training is left for last,
then waited for (polling, so that under ``torchrun`` no collective outlasts its timeout) — and skipped if that
process finished it (unless ``force``). Without ``fcntl`` (Windows), or on a file system that refuses ``flock``,
nothing is locked (with a warning).

What a rerun must reproduce is kept with the experiment: the thread count of its first run on a CPU (results on a
CPU depend on it; recorded in ``experiment.json`` and taken by every later run unless ``threads`` is given), and
the precision ``--amp auto`` measured (each run's ``config.json``; a new seed takes its variant's). The time the
job has left is estimated from the epochs measured (:mod:`pdeconv.eta`) and printed after the first epoch and as
runs finish; on a terminal one progress bar carries it.
"""

from __future__ import annotations

import errno
import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from pdeconv import engine, run, storage
from pdeconv.distributed import agree, on_main, start, stop
from pdeconv.errors import PdeconvError
from pdeconv.eta import Progress
from pdeconv.experiment.report import shared_settings, write_report
from pdeconv.experiment.results import collect, run_dir
from pdeconv.experiment.stats import Paired, paired
from pdeconv.runtime import check_out_dir

__all__ = ["CompareResult", "check_seed_options", "compare", "in_training"]


@dataclass
class CompareResult:
    """Where the experiment's files are, its per-run rows, the printed table, and each variant's paired
    comparison with the reference (:class:`~pdeconv.experiment.stats.Paired`; ``reached``: whether its CI met
    ``target_ci``, when one was set)."""

    out: Path
    rows: list[dict[str, Any]]
    table: str
    reference: str = "baseline"
    comparisons: dict[str, Paired] = field(default_factory=dict)
    reached: dict[str, bool] | None = None
    verdicts: list[str] = field(default_factory=list)


def _state(run: Path) -> str:
    """``finished``, ``partial`` (a checkpoint to resume from), ``stale`` (files of an unfinished run but no
    checkpoint, as a run interrupted in another session leaves them: trained again) or ``new``."""
    if (run / engine.CONFIG).exists() and (run / engine.METRICS).exists():
        try:
            if engine.run_summary(run)["finished"]:
                return "finished"
        except (ValueError, FileNotFoundError, KeyError):
            pass
    if (run / engine.CHECKPOINT).exists():
        return "partial"
    return "stale" if (run / engine.METRICS).exists() or (run / engine.CONFIG).exists() else "new"


#: seconds between two tries at a run another process holds
LOCK_POLL = 5.0
_HELD: set[int] = set()  # descriptors holding run locks in this process


def _close_held_in_child() -> None:
    """After a fork (DataLoader workers), the child drops its copies of the lock descriptors: a ``flock`` lasts
    while any copy is open, and a worker outliving its run must not keep the run locked."""
    for fd in _HELD:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_held_in_child)


def _lock_run(directory: Path) -> int | None:
    """Try to lock the run ``directory`` (created if missing) exclusively, without waiting: the open descriptor
    that holds the lock (:func:`_unlock_run` releases it), ``None`` when another process holds it, or ``-1`` where
    nothing can be locked (no ``fcntl``, or a file system that refuses ``flock``: a warning says so)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return -1
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        warnings.warn(f"this file system refuses flock ({e.strerror}): runs are not protected from two compare "
                      "commands training the same run at once", stacklevel=2)
        return -1
    except BaseException:
        os.close(fd)
        raise
    _HELD.add(fd)
    return fd


def _unlock_run(fd: int | None) -> None:
    if fd is not None and fd >= 0:
        _HELD.discard(fd)
        os.close(fd)


def in_training(directory: Path) -> bool:
    """Whether a ``compare`` command holds the lock of the run ``directory`` (is training it) right now.

    Takes the lock for an instant to find out (a ``compare`` starting at that moment leaves the run for last
    and takes it then); ``False`` where nothing can be locked (no ``flock``).
    """
    fd = _lock_run(Path(directory))
    _unlock_run(fd)
    return fd is None


def _claim_directory(out: Path, config: engine.TrainConfig, force: bool, meta_name: str = "experiment.json") -> None:
    """Make ``out`` this experiment's (or, with ``meta_name="runs.json"``, this run store's): record the shared
    settings, or refuse a directory that holds other settings or other files."""
    check_out_dir(out)
    meta = out / meta_name
    settings = shared_settings(config)
    if meta.exists() and not force:
        try:
            old = json.loads(meta.read_text())
        except json.JSONDecodeError:
            raise PdeconvError(f"{meta} is unreadable; use another --out or --force") from None
        diffs = [f"{k}: {old.get(k)!r} → {v!r}" for k, v in settings.items() if old.get(k) != v]
        if diffs:
            raise PdeconvError(
                f"{out} holds an experiment with other settings ({'; '.join(diffs)}); "
                "use another --out, the same settings, or --force to retrain it"
            )
    elif not meta.exists() and out.is_dir() and any(out.iterdir()) and not force:
        raise PdeconvError(f"{out} is not empty and holds no pdeconv experiment; use another --out or --force")
    out.mkdir(parents=True, exist_ok=True)
    kept = {}
    if meta.exists() and not force:  # what earlier runs recorded (the thread count) stays with the experiment
        kept = {k: v for k, v in json.loads(meta.read_text()).items() if k in _RECORDED}
    storage.write_text(meta, json.dumps(settings | kept, indent=2) + "\n")


#: placement settings an experiment records once and reuses (experiment.json), beside its identity settings
_RECORDED = ("threads",)


def _recorded_threads(out: Path, todo: Sequence[Path]) -> str | None:
    """The thread count this experiment's runs use: the one recorded in experiment.json, else the count of the
    first of its runs that ran on a CPU (an experiment from before the record), else ``None`` (no run yet)."""
    try:
        recorded = json.loads((out / "experiment.json").read_text()).get("threads")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded is not None:
        return str(recorded)
    return next((t for t in map(_ran_on_cpu_with, todo) if t is not None), None)


def _record_threads(out: Path, threads: str) -> None:
    meta = out / "experiment.json"
    storage.write_text(meta, json.dumps(json.loads(meta.read_text()) | {"threads": threads}, indent=2) + "\n")


def _ran_on_cpu_with(directory: Path) -> str | None:
    """The thread count of the run in ``directory`` when it ran on a CPU, else ``None``."""
    try:
        meta = json.loads((directory / engine.CONFIG).read_text())
        return str(int(meta["config"]["threads"])) if str(meta["device"]).startswith("cpu") else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _recorded_amp_choices(directories: Sequence[Path]) -> list[dict[str, Any]]:
    """The ``--amp auto`` measurements the runs in ``directories`` recorded (config.json's ``amp_choice``)."""
    found = []
    for directory in directories:
        try:
            choice = json.loads((directory / engine.CONFIG).read_text()).get("amp_choice")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(choice, dict):
            found.append(choice)
    return found


def _epochs_done(directory: Path) -> int:
    try:
        return engine.run_summary(directory)["epochs"]
    except (OSError, ValueError, KeyError):
        return 0


def check_seed_options(seeds: Sequence[int], target_ci: float | None, max_seeds: int) -> None:
    """``ValueError`` (one line) for seeds or automatic-seed settings that cannot work."""
    if not seeds:
        raise PdeconvError("compare needs at least one seed")
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise PdeconvError(f"seeds must be distinct and non-negative; got {list(seeds)}")
    if target_ci is not None:
        if not target_ci > 0:
            raise PdeconvError(f"--target-ci must be a positive number of accuracy points, e.g. 0.15; got {target_ci}")
        if max_seeds < 2:
            raise PdeconvError(f"--max-seeds must be at least 2 (a CI needs two paired seeds); got {max_seeds}")
        if len(seeds) > max_seeds:
            raise PdeconvError(f"{len(seeds)} starting seeds exceed --max-seeds {max_seeds}")


def _paired_of(out: Path, variant: str, reference: str, plan: dict[str, list[int]], runs: Path | None) -> Paired:
    """The paired comparison that decides whether to add seeds: of validation accuracy when the runs hold out a
    validation split (so the choice never reads the test set), else of test accuracy."""
    summaries = {v: {s: engine.run_summary(run_dir(out, v, s, runs)) for s in plan[v]} for v in (variant, reference)}
    key = "val_acc" if all("val_acc" in r for rs in summaries.values() for r in rs.values()) else "test_acc"
    accuracy = {v: {s: r[key] for s, r in rs.items()} for v, rs in summaries.items()}
    return paired(accuracy[variant], accuracy[reference])


def _more_seeds(out: Path, plan: dict[str, list[int]], reference: str, target_ci: float,
                max_seeds: int, runs: Path | None) -> dict[str, list[int]]:
    """The plan with one more seed for each variant whose paired CI is wider than the target (up to the cap);
    the reference gets every seed any variant has."""
    grown = {v: list(s) for v, s in plan.items()}
    for variant in plan:
        if variant == reference:
            continue
        half = _paired_of(out, variant, reference, plan, runs).half_width
        if (half is None or 100 * half > target_ci) and len(plan[variant]) < max_seeds:
            grown[variant].append(next(s for s in range(len(plan[variant]) + max_seeds) if s not in plan[variant]))
    grown[reference] = sorted(set().union(*grown.values()))
    return grown


def compare(
    variants: Sequence[str],
    seeds: Sequence[int],
    out: str | Path,
    *,
    base: engine.TrainConfig,
    force: bool = False,
    reference: str | None = None,
    target_ci: float | None = None,
    max_seeds: int = 10,
    runs: str | Path | None = None,
    command: str | None = None,
) -> CompareResult:
    """Train every (variant, seed) with the settings of ``base`` and write results, report and plots.

    ``variants`` are pdeconv variant specs (``"seed+neumann"`` allowed); the run directory of each is
    ``out/runs/VARIANT/seedN``; each run is :func:`pdeconv.run.variant_config` of ``base`` (seed s pairs the runs
    of every variant: :func:`pdeconv.run.train`). Each variant is compared with ``reference`` (default:
    ``baseline`` when listed, else the first variant) by the paired difference of test accuracy per seed.

    ``target_ci`` (accuracy points, e.g. 0.15): automatic seeds. After ``seeds``, each variant whose 95% CI of
    Δ is wider than ± ``target_ci`` gets one more seed (the reference too), round after round, until every
    variant meets the target or has ``max_seeds`` seeds; finished runs are reused.

    ``runs``: a run store shared by several experiments (``RUNS/VARIANT/seedN``; default ``out/runs``), so a run
    with the same settings and seed (the baseline above all) is trained once; the store records its settings
    in ``runs.json`` and refuses others, like the experiment directory (the thread count stays the experiment's:
    its ``experiment.json``). ``command``: the command line, for the
    report's record of how it was made.
    """
    from pdeconv.models import get_variant

    variants = list(dict.fromkeys(variants))
    for v in variants:
        get_variant(v)  # unknown names fail before anything is trained
    if not variants:
        raise PdeconvError("compare needs at least one variant")
    seeds = list(seeds)
    check_seed_options(seeds, target_ci, max_seeds)
    if reference is None:
        reference = "baseline" if "baseline" in variants else variants[0]
    elif reference not in variants:
        raise PdeconvError(f"--reference {reference!r} is not among the variants ({', '.join(variants)}); add it "
                         "to --variants or name one of them")
    out = Path(out)
    runs = Path(runs) if runs is not None else None
    # under torchrun: one process group for the whole experiment, every decision made by rank 0 and shared
    procs = start(base.device, deterministic=base.deterministic)

    def claim() -> None:
        _claim_directory(out, base, force)
        if runs is not None:
            _claim_directory(runs, base, force, meta_name="runs.json")

    on_main(claim, main=procs.main)
    say = print if procs.main else (lambda *args, **kwargs: None)
    plan = {v: list(seeds) for v in variants}
    trained: set[tuple[str, int]] = set()  # this call's runs: with force, each is retrained once, not per round
    # one thread count for every run and rerun of the experiment (results on a CPU depend on it): the first run's
    every = [run_dir(out, v, s, runs) for v in variants for s in seeds]
    recorded = None if force else on_main(lambda: _recorded_threads(out, every), main=procs.main)
    if base.threads == "auto" and recorded is not None:
        base = replace(base, threads=recorded)
        say(f"threads: {recorded}, the count this experiment's first run used (experiment.json; --threads N "
            "to change it)", flush=True)
    elif base.threads != "auto" and recorded not in (None, base.threads):
        say(f"threads: {base.threads} as given; this experiment's earlier runs used {recorded} (experiment.json), "
            "so the new runs' accuracies may differ from what they would have been with theirs", flush=True)
    if procs.main and base.amp == "auto":  # the precision measured for earlier seeds holds for new ones
        engine.restore_amp_choices(_recorded_amp_choices(every))
    progress = Progress("compare", bar=base.progress and procs.main, say=lambda line: say(line, flush=True))

    def fix_threads(directory: Path) -> None:
        """After the experiment's first run on a CPU: its thread count is the experiment's (recorded)."""
        nonlocal base
        if base.threads != "auto":
            return
        threads = on_main(lambda: _ran_on_cpu_with(directory), main=procs.main)
        if threads is not None:
            on_main(lambda: _record_threads(out, threads), main=procs.main)
            base = replace(base, threads=threads)
            say(f"threads: {threads}, chosen from the idle cores by this first run; every later run and rerun of "
                "this experiment uses it (experiment.json; --threads N to change it)", flush=True)

    def one_run(variant: str, seed: int, head: str, wait: bool) -> bool:
        """Train (or skip) one run; ``False`` when another process holds it and not ``wait``."""
        directory = run_dir(out, variant, seed, runs)
        # every try is one short collective under torchrun: a blocking wait on rank 0 would outlast the others'
        # (the other ranks get rank 0's descriptor number: only whether it is None matters to them)
        while (fd := on_main(lambda: _lock_run(directory), main=procs.main)) is None:
            if not wait:
                return False
            time.sleep(LOCK_POLL)
        try:
            state = on_main(lambda: _state(directory), main=procs.main)
            if state == "finished" and not force:
                say(f"{head} {variant} seed {seed}: finished {'meanwhile' if wait else 'earlier'}, skipped",
                    flush=True)
                progress.drop((variant, seed))
                return True
            config = replace(run.variant_config(base, variant, seed, directory),
                             resume=state == "partial" and not force, force=force or state == "stale")
            doing = "resuming" if config.resume else ("training again (unfinished, no checkpoint here)"
                                                      if state == "stale" and not force else "training")
            threads = "" if config.threads == "auto" else f" ({config.threads} thread{'s' * (config.threads != '1')})"
            say(f"{head} {variant} seed {seed}: {doing} → {directory}{threads}", flush=True)
            if base.compile:  # each variant is a new graph: start from an empty compile cache, not its limit
                torch._dynamo.reset()
            if procs.main:
                if (variant, seed) not in progress.estimate:  # left for last, and ours to train after all
                    progress.add((variant, seed), variant, config.epochs, 0 if force else _epochs_done(directory))
                progress.start((variant, seed))
            record = (lambda r: progress.epoch((variant, seed), r)) if procs.main else None
            run.train(config, on_epoch_end=record)
            progress.finish((variant, seed))
            fix_threads(directory)
            return True
        finally:
            if procs.main:
                _unlock_run(fd)

    def expect(todo: list[tuple[str, int]]) -> None:
        """What the estimate counts: the runs to train, less those finished and those another process holds."""
        for variant, seed in todo:
            directory = run_dir(out, variant, seed, runs)
            state = _state(directory)
            if (state == "finished" and not force) or (directory.is_dir() and in_training(directory)):
                continue
            progress.add((variant, seed), variant, base.epochs, 0 if force else _epochs_done(directory))

    try:
        with progress.printing():
            while True:
                todo = [(v, s) for v in variants for s in plan[v] if (v, s) not in trained]
                if procs.main:
                    expect(todo)
                busy = []  # runs another process is training: last, waited for
                for i, (variant, seed) in enumerate(todo, 1):
                    trained.add((variant, seed))
                    if not one_run(variant, seed, f"[{i}/{len(todo)}]", wait=False):
                        say(f"[{i}/{len(todo)}] {variant} seed {seed}: another process is training it; left for last",
                            flush=True)
                        progress.drop((variant, seed))
                        busy.append((variant, seed))
                for variant, seed in busy:
                    say(f"[waiting] {variant} seed {seed}: for the other process to finish it", flush=True)
                    one_run(variant, seed, "[waited]", wait=True)
                if target_ci is None:
                    break
                grown = on_main(lambda p=plan: _more_seeds(out, p, reference, target_ci, max_seeds, runs),
                                main=procs.main)
                if grown == plan:
                    break
                added = [f"{v} +{len(grown[v]) - len(plan[v])}" for v in variants if len(grown[v]) > len(plan[v])]
                say(f"95% CI of Δ wider than ±{target_ci:g} points: more seeds ({', '.join(added)})", flush=True)
                plan = grown
    finally:
        progress.close()
    result = CompareResult(out, [], "", reference)
    if procs.main:
        rows = collect(out, variants, plan, base, runs=runs)
        report = write_report(out, rows, base, reference=reference, target_ci=target_ci, max_seeds=max_seeds,
                              command=command)
        result = CompareResult(out, rows, report.table, reference, report.comparisons, report.reached,
                               report.verdicts)
        say(report.table, flush=True)
        say("\n".join(["", *report.verdicts, ""]), flush=True)
        say(f"wrote {out / 'results.csv'}, {out / 'report.md'} and plots", flush=True)
    agree(None)  # every rank waits for rank 0's tables, then leaves together
    stop(procs)
    return result
