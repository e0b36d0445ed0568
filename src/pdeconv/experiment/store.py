"""The run store: one directory per (variant, seed) that several ``compare`` commands may share at once.

A run's state is told from its files (:func:`run_state`); a run is trained under an exclusive ``flock`` on its
directory (:func:`lock_run`, rank 0 holds it), which forked workers drop (an at-fork hook), so a run another
process is training is left for last and waited for. A directory is claimed for an experiment or a store by
recording its identity settings (``experiment.json`` / ``runs.json``), and one that holds other settings or other
files is refused; what a rerun must reproduce (the thread count of the first run on a CPU) is recorded beside them.
Without ``fcntl`` (Windows), or on a file system that refuses ``flock``, nothing is locked (with a warning).
"""

from __future__ import annotations

import errno
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from pdeconv import engine, storage
from pdeconv.errors import PdeconvError
from pdeconv.experiment.report import shared_settings
from pdeconv.runtime import check_out_dir

__all__ = ["LOCK_POLL", "claim_directory", "in_training", "lock_run", "ran_on_cpu_with", "record_threads",
           "recorded_threads", "run_state", "unlock_run"]


def run_state(run: Path) -> str:
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


def lock_run(directory: Path) -> int | None:
    """Try to lock the run ``directory`` (created if missing) exclusively, without waiting: the open descriptor
    that holds the lock (:func:`unlock_run` releases it), ``None`` when another process holds it, or ``-1`` where
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


def unlock_run(fd: int | None) -> None:
    if fd is not None and fd >= 0:
        _HELD.discard(fd)
        os.close(fd)


def in_training(directory: Path) -> bool:
    """Whether a ``compare`` command holds the lock of the run ``directory`` (is training it) right now.

    Takes the lock for an instant to find out (a ``compare`` starting at that moment leaves the run for last
    and takes it then); ``False`` where nothing can be locked (no ``flock``).
    """
    fd = lock_run(Path(directory))
    unlock_run(fd)
    return fd is None


def claim_directory(out: Path, config: engine.TrainConfig, force: bool, meta_name: str = "experiment.json") -> None:
    """Make ``out`` this experiment's (or, with ``meta_name="runs.json"``, this run store's): record the shared
    settings, or refuse a directory that holds other settings or other files."""
    check_out_dir(out)
    meta = out / meta_name
    settings = shared_settings(config)
    if meta.exists() and not force:
        try:
            old = json.loads(meta.read_text())
        except json.JSONDecodeError:
            raise PdeconvError(f"{meta} is unreadable; use another `out` or `force`") from None
        diffs = [f"{k}: {old.get(k)!r} → {v!r}" for k, v in settings.items() if old.get(k) != v]
        if diffs:
            raise PdeconvError(
                f"{out} holds an experiment with other settings ({'; '.join(diffs)}); "
                "use another `out`, the same settings, or `force` to retrain it"
            )
    elif not meta.exists() and out.is_dir() and any(out.iterdir()) and not force:
        raise PdeconvError(f"{out} is not empty and holds no pdeconv experiment; use another `out` or `force`")
    out.mkdir(parents=True, exist_ok=True)
    kept = {}
    if meta.exists() and not force:  # what earlier runs recorded (the thread count) stays with the experiment
        kept = {k: v for k, v in json.loads(meta.read_text()).items() if k in _RECORDED}
    storage.write_text(meta, json.dumps(settings | kept, indent=2) + "\n")


#: placement settings an experiment records once and reuses (experiment.json), beside its identity settings
_RECORDED = ("threads",)


def recorded_threads(out: Path, todo: Sequence[Path]) -> str | None:
    """The thread count this experiment's runs use: the one recorded in experiment.json, else the count of the
    first of its runs that ran on a CPU (an experiment from before the record), else ``None`` (no run yet)."""
    try:
        recorded = json.loads((out / "experiment.json").read_text()).get("threads")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded is not None:
        return str(recorded)
    return next((t for t in map(ran_on_cpu_with, todo) if t is not None), None)


def record_threads(out: Path, threads: str) -> None:
    meta = out / "experiment.json"
    storage.write_text(meta, json.dumps(json.loads(meta.read_text()) | {"threads": threads}, indent=2) + "\n")


def ran_on_cpu_with(directory: Path) -> str | None:
    """The thread count of the run in ``directory`` when it ran on a CPU, else ``None``."""
    try:
        meta = json.loads((directory / engine.CONFIG).read_text())
        return str(int(meta["config"]["threads"])) if str(meta["device"]).startswith("cpu") else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
