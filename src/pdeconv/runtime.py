"""Process-level settings of a CPU run: how many intra-op threads, chosen for the machine as it is now.

PyTorch runs its CPU parallel regions on one OpenMP thread per core. When another process keeps a core busy,
one of those threads is descheduled at every parallel region and the others wait for it at the barrier, so a
train step slows down many times over (``benchmarks/threads.py`` measures it: 3–4× for ResNet-20 with one busy
process on 2 cores). ``threads="auto"`` therefore uses only the cores that are idle when the run starts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pdeconv.errors import PdeconvError

__all__ = [
    "StageTimes", "auto_threads", "busy_cpus", "check_out_dir", "code_revision", "cpu_description", "set_threads",
    "usable_cpus",
]

# instruction sets that decide which CPU kernels run (and how fast bf16 is), in the words of /proc/cpuinfo
_FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_description() -> str:
    """The CPU in a few words for run records: model name, core count and the kernel-relevant features,
    e.g. ``"AMD EPYC, 2 cores, avx2 avx512f avx512_bf16"`` (Linux; elsewhere ``platform.processor()``)."""
    import platform

    name, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not name:
                    name = " ".join(value.split())
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
                if name and flags:
                    break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    features = " ".join(f for f in _FEATURES if f in flags)
    return f"{name}, {os.cpu_count()} cores" + (f", {features}" if features else "")


def code_revision(where: str | os.PathLike | None = None) -> str | None:
    """``git describe --always --dirty`` of the checkout at ``where`` (default: the one pdeconv is imported
    from), for run records; ``None`` outside a git checkout or without git."""
    import subprocess
    from pathlib import Path

    folder = Path(where) if where is not None else Path(__file__).resolve().parent
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=folder, capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat, or None where there is no /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - idle, total


def busy_cpus(interval: float = 0.3) -> float | None:
    """How many CPUs other processes kept busy over ``interval`` seconds (this process sleeps meanwhile).

    Measured from /proc/stat (Linux); ``None`` where it is not available.
    """
    first = _cpu_times()
    if first is None:
        return None
    time.sleep(interval)
    second = _cpu_times()
    if second is None or second[1] <= first[1]:
        return None
    share = (second[0] - first[0]) / (second[1] - first[1])
    return share * (os.cpu_count() or 1)


def auto_threads(interval: float = 0.3) -> int:
    """Intra-op threads for a run starting now.

    * ``OMP_NUM_THREADS`` set in the environment (by the user, or by torchrun for several processes): the count
      PyTorch already took from it, unchanged;
    * several processes on this machine (torchrun's ``LOCAL_WORLD_SIZE``): the usable CPUs shared evenly;
    * else the usable CPUs minus those other processes keep busy (a CPU counts as busy from half a CPU of load
      on; measured over ``interval`` seconds), at least 1; where the load cannot be measured, all usable CPUs.
    """
    import torch

    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    cpus = usable_cpus()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    if local > 1:
        return max(1, cpus // local)
    busy = busy_cpus(interval)
    if busy is None:
        return cpus
    return max(1, min(cpus, cpus - int(busy + 0.5)))


def set_threads(threads: int | str | None) -> int:
    """Set PyTorch's intra-op threads: a count, ``"auto"`` (:func:`auto_threads`) or ``None`` (leave as is).

    Returns the number in effect. ``ValueError`` for anything else.
    """
    import torch

    if threads is None:
        return torch.get_num_threads()
    if threads == "auto":
        count = auto_threads()
    else:
        try:
            count = int(threads)
        except (TypeError, ValueError):
            raise PdeconvError(f"threads must be a positive count or 'auto'; got {threads!r}") from None
        if count < 1:
            raise PdeconvError(f"threads must be a positive count or 'auto'; got {threads!r}")
    torch.set_num_threads(count)
    return count


def check_out_dir(out: str | os.PathLike) -> None:
    """``ValueError`` (one line) when ``out`` names something other than a folder (or a place for one); every
    command that writes a folder checks this before its work, not after it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PdeconvError(f"`out` {out} is a file; `out` must be a directory (created if missing)")
    if out.parent.exists() and not out.parent.is_dir():
        raise PdeconvError(f"`out` {out}: {out.parent} is a file, not a directory")


class StageTimes(dict):
    """Wall-clock seconds per named stage of a job, in the order the stages were first entered.

    ``with times.stage("load"): ...`` adds the block's time to ``times["load"]`` (a stage entered again sums);
    :meth:`line` reads them back, e.g. ``"load 0.21 s, fit 0.70 s"``.
    """

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + time.perf_counter() - start

    def line(self) -> str:
        return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in self.items())
