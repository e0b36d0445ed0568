"""Processes and devices of a run: one process, or several started by ``torchrun`` (floor 2).

``torchrun --nproc_per_node=K [--nnodes M ...] -m pdeconv train|compare ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE`` in each process; :func:`start` reads them, picks this process's device
(``cuda:LOCAL_RANK``, or the one GPU a scheduler shows a process), and starts the process group once: gloo on
CPUs, NCCL on GPUs, with an explicit timeout (``PDECONV_DIST_TIMEOUT`` seconds, default 600) so that a rank
that waits for a dead one gives up instead of hanging. ``pdeconv compare`` starts it once for the whole
experiment; each ``engine.train`` reuses it.

Failures are decided together: :func:`agree` is a collective in which every rank says whether its part
failed, and :func:`on_main` runs a step on rank 0 alone and shares its result or its error, so one rank's error
(a missing file, bad input) makes every rank raise, with that rank's message, instead of leaving the others
waiting in the next collective. An exception that escapes anyway ends
the process without tearing the group down politely (that call can block on the dead peer); torchrun then
stops the other ranks. (Such a process may end with gloo's "terminate called without an active exception" after
the error: a communication thread of PyTorch's outliving the interpreter; the error above it is the one to read.)
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from pdeconv.errors import PdeconvError

__all__ = ["DistributedError", "Processes", "agree", "broadcast", "is_distributed", "on_main", "start", "stop"]


class DistributedError(PdeconvError):
    """Inconsistent distributed settings, or another rank failed; the message says which and what to do."""


@dataclass
class Processes:
    """This process's place: global rank, world size, local rank, the device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    owns_group: bool  # this call started the process group, so ``stop`` ends it

    @property
    def main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise DistributedError(f"{name}={os.environ[name]!r} is not an integer; torchrun sets it, do not edit it") \
            from None


def is_distributed() -> bool:
    """Whether a process group is running (several processes)."""
    return dist.is_available() and dist.is_initialized()


def _timeout() -> timedelta:
    return timedelta(seconds=float(os.environ.get("PDECONV_DIST_TIMEOUT", "600")))


def _device(spec: str, world: int, local: int, local_world: int) -> torch.device:
    name = "cuda" if spec == "auto" and torch.cuda.is_available() else ("cpu" if spec == "auto" else spec)
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DistributedError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise DistributedError(f"device {spec!r} asked for, but no CUDA GPU is available; use `device` cpu")
    visible = torch.cuda.device_count()
    if world > 1:
        if device.index is not None:
            raise DistributedError(
                f"`device` {spec} under torchrun would put every process on GPU {device.index}; pass `device` cuda "
                "(each process takes cuda:LOCAL_RANK) and choose GPUs with CUDA_VISIBLE_DEVICES"
            )
        if visible == 1:  # a scheduler that shows each process its own GPU (SLURM-style)
            return torch.device("cuda", 0)
        if local_world > visible:
            raise DistributedError(
                f"torchrun started {local_world} processes on this machine but {visible} GPUs are visible; use "
                f"--nproc_per_node={visible} or fewer"
            )
        return torch.device("cuda", local)
    return torch.device("cuda", 0 if device.index is None else device.index)


def start(device: str = "auto", *, deterministic: bool = False) -> Processes:
    """This process's ranks and device; starts the process group when torchrun started several processes.

    ``deterministic``: on CUDA, deterministic algorithms, no cuDNN autotuning, no TF32 (slower; what a bitwise
    resume on a GPU needs). Raises :class:`DistributedError` (one line, on every rank) for inconsistent settings.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    where = _device(device, world, local, local_world)
    if where.type == "cuda":
        torch.cuda.set_device(where)
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not deterministic
    owns = False
    if world > 1 and not is_distributed():
        backend = "nccl" if where.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"timeout": _timeout()}
        if where.type == "cuda":
            kwargs["device_id"] = where  # binds NCCL to this GPU at once: no duplicate-GPU surprises later
        dist.init_process_group(backend, **kwargs)
        owns = True
    if is_distributed():
        rank, world = dist.get_rank(), dist.get_world_size()
    return Processes(rank, world, local, local_world, where, owns)


def stop(procs: Processes) -> None:
    """End the process group if :func:`start` began it (call only after success: see the module docstring).

    A barrier first: no rank leaves while another still communicates, and each rank's communication threads
    have let go of the last collective's tensors before the interpreter shuts down. (A DistributedDataParallel
    model keeps its process group alive past ``destroy_process_group``; if a gloo thread releases a tensor while
    Python is finalizing, the process aborts with "terminate called without an active exception".) So first the
    garbage: a finished DistributedDataParallel model sits in reference cycles and holds the group; collected now,
    the group really ends here, its threads joined, and not at interpreter exit (where the abort still came, now
    and then, under load, with the barrier alone).
    """
    if procs.owns_group and is_distributed():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def agree(error: BaseException | None) -> None:
    """Every rank says whether its part failed (``error``); if any did, every rank raises: the failed rank its
    own exception, the others :class:`DistributedError` naming the lowest failed rank and its message."""
    if not is_distributed():
        if error is not None:
            raise error
        return
    box: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(box, None if error is None else _first_line(error))
    if error is not None:
        raise error
    failed = [(r, m) for r, m in enumerate(box) if m is not None]
    if failed:
        rank, message = failed[0]
        raise DistributedError(f"rank {rank} failed: {message}")


def on_main(fn: Callable[[], Any], *, main: bool) -> Any:
    """``fn()`` on rank 0 only, its result sent to every rank; if it raises a user error (``ValueError``,
    ``OSError``), rank 0 raises it and every other rank :class:`DistributedError` with its message."""
    if not is_distributed():
        return fn()
    value, error = None, None
    if main:
        try:
            value = fn()
        except (ValueError, OSError) as e:
            error = e
    message, value = broadcast((None if error is None else _first_line(error), value))
    if error is not None:
        raise error
    if message is not None:
        raise DistributedError(f"rank 0 failed: {message}")
    return value


def broadcast(value: Any, src: int = 0) -> Any:
    """``value`` of rank ``src`` on every rank (pickled by torch.distributed between our own processes)."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]
