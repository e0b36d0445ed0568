"""How long a job of training runs has left, from what this machine has measured so far (floor 2).

A published time holds on the machine it was measured on; :class:`Estimate` answers for the machine at hand.
It follows the runs a job still has to train (``pdeconv compare``'s variants × seeds, or ``pdeconv train``'s one
run) and the epochs they report, and predicts

    time left = Σ over unfinished runs of  (start-up, if not started) + (epochs left) · (seconds per epoch)

where seconds per epoch is the mean wall time of the epochs measured for the run's *group* (its variant: variants
differ in speed), or, for a group not yet measured, the mean over the groups measured; start-up is the mean time
from a run's start to its first epoch's start (data, model, precision measurement). Runs finished earlier, or
trained by another process, are not part of the job (:meth:`Estimate.drop`). The clock is a parameter, for tests.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from statistics import fmean
from typing import Any

from tqdm.auto import tqdm

__all__ = ["Estimate", "Progress", "format_duration"]


def format_duration(seconds: float) -> str:
    """``"40 s"``, ``"27 min"``, ``"1 h 05 min"``: rounded to what an estimate can promise."""
    if seconds < 90:
        return f"{max(0, round(seconds))} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 90 else f"{minutes // 60} h {minutes % 60:02d} min"


@dataclass
class _Run:
    group: str
    epochs: int
    done: int = 0
    started: float | None = None
    timed: bool = False  # its start-up (start to first epoch) measured
    finished: bool = False


class Estimate:
    """The remaining time of a job of runs; see the module docstring for the formula."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._runs: dict[Hashable, _Run] = {}
        self._epoch_s: dict[str, list[float]] = {}
        self._startup_s: list[float] = []
        self._images = 0.0
        self._train_s = 0.0

    def add(self, key: Hashable, group: str, epochs: int, done: int = 0) -> None:
        """A run of the job: ``epochs`` in all, ``done`` of them already trained (a run to resume)."""
        self._runs[key] = _Run(group, epochs, min(done, epochs))

    def __contains__(self, key: Hashable) -> bool:
        return key in self._runs

    def drop(self, key: Hashable) -> None:
        """Not part of the job after all (finished earlier, or another process trains it)."""
        self._runs.pop(key, None)

    def start(self, key: Hashable) -> None:
        """The run starts (or resumes) now."""
        run = self._runs.get(key)
        if run is None:
            raise KeyError(f"{key!r} is not a run of this job; add it first")
        run.started, run.timed = self._clock(), False

    def epoch(self, key: Hashable, record: dict[str, Any]) -> None:
        """The run finished epoch ``record["epoch"]``, which took ``wall_s`` (training ``train_s`` at ``img_per_s``)."""
        run = self._runs[key]
        if run.started is not None and not run.timed:  # the first epoch since it started: its start-up is known
            self._startup_s.append(max(0.0, self._clock() - run.started - record["wall_s"]))
            run.timed = True
        run.done = record["epoch"]
        self._epoch_s.setdefault(run.group, []).append(record["wall_s"])
        self._images += record["img_per_s"] * record["train_s"]
        self._train_s += record["train_s"]

    def finish(self, key: Hashable) -> None:
        """The run is done (or stopped): nothing of it is left."""
        if key in self._runs:
            self._runs[key].finished = True

    @property
    def measured(self) -> bool:
        """Whether an epoch has been measured (before that there is no estimate)."""
        return bool(self._epoch_s)

    def runs_left(self) -> int:
        return sum(not r.finished for r in self._runs.values())

    def epochs(self) -> tuple[int, int]:
        """(epochs done, epochs in all) of the job's runs: a progress bar's position and length."""
        return sum(r.done for r in self._runs.values()), sum(r.epochs for r in self._runs.values())

    def img_per_s(self) -> float | None:
        """Training images per second over every epoch measured."""
        return self._images / self._train_s if self._train_s > 0 else None

    def seconds_left(self) -> float | None:
        """The estimate of the time left, in seconds; ``None`` before the first epoch is measured."""
        if not self._epoch_s:
            return None
        per_group = {g: fmean(s) for g, s in self._epoch_s.items()}
        typical = fmean(per_group.values())
        startup = fmean(self._startup_s) if self._startup_s else 0.0
        now, left = self._clock(), 0.0
        for run in self._runs.values():
            if run.finished:
                continue
            epoch_s = per_group.get(run.group, typical)
            left += (run.epochs - run.done) * epoch_s
            if run.started is None:
                left += startup
            elif not run.timed:  # started, no epoch since: what remains of its start-up
                left += max(0.0, startup - (now - run.started))
        return left

    def line(self) -> str:
        """``"12 runs, about 27 min left at 450 img/s"``: for the job's log, after an epoch or a run."""
        n, seconds, rate = self.runs_left(), self.seconds_left(), self.img_per_s()
        runs = f"{n} run{'' if n == 1 else 's'}"
        if seconds is None:
            return f"{runs} left (an estimate follows the first epoch)"
        speed = f" at {rate:.0f} img/s" if rate else ""
        return f"{runs}, about {format_duration(seconds)} left{speed} (measured on this machine so far)"


class Progress:
    """An :class:`Estimate` told to a person: its line after the job's first epoch and after each run that leaves
    others, and (``bar``, on a terminal only) one progress bar over the job's epochs carrying the same estimate.

    The bar is a tqdm bar on standard error; while :meth:`printing` is active, what the job prints goes through
    ``tqdm.write`` so that lines and bar do not tear each other.
    """

    def __init__(self, what: str, *, bar: bool = False, say: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.estimate = Estimate(clock)
        self._say = say or (lambda line: print(line, flush=True))
        self._told = False
        self._bar = tqdm(total=0, desc=what, unit="epoch", disable=None if bar else True, position=0,
                         bar_format="{desc}: {percentage:3.0f}%|{bar}| {n}/{total} epochs [{elapsed}{postfix}]")

    @property
    def shown(self) -> bool:
        """Whether the bar is on screen (a terminal, and asked for)."""
        return not self._bar.disable

    def add(self, key: Hashable, group: str, epochs: int, done: int = 0) -> None:
        self.estimate.add(key, group, epochs, done)
        self._refresh()

    def drop(self, key: Hashable) -> None:
        self.estimate.drop(key)
        self._refresh()

    def start(self, key: Hashable) -> None:
        self.estimate.start(key)

    def epoch(self, key: Hashable, record: dict[str, Any]) -> None:
        self.estimate.epoch(key, record)
        done, total = self.estimate.epochs()
        if not self._told and done < total:
            self._say(self.estimate.line())
            self._told = True
        self._refresh()

    def finish(self, key: Hashable) -> None:
        self.estimate.finish(key)
        if self._told and self.estimate.runs_left():
            self._say(self.estimate.line())
        self._refresh()

    def _refresh(self) -> None:
        if self.shown:
            self._bar.total, self._bar.n = self.estimate.epochs()[1], self.estimate.epochs()[0]
            seconds = self.estimate.seconds_left()
            self._bar.set_postfix_str(self.estimate.line().split(" (")[0] if seconds is not None else "")

    @contextlib.contextmanager
    def printing(self) -> Iterator[None]:
        """Within: standard output goes above the bar (only while the bar is shown)."""
        if not self.shown:
            yield
            return
        with contextlib.redirect_stdout(_AboveBar(sys.stdout)):
            yield

    def close(self) -> None:
        self._bar.close()


class _AboveBar:
    """A stdout that writes each line with ``tqdm.write`` (which clears the bars, writes, and draws them again)."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if text.rstrip("\n"):
            tqdm.write(text.rstrip("\n"), file=self._stream)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()
