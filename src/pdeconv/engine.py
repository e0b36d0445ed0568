"""One training loop for any ``nn.Module``: one process or torchrun DDP, AMP, exact resume, safe checkpoints.

The engine knows datasets (:mod:`pdeconv.data`) but not models: the caller passes ``build_model(info)``.
The objective is ``CE_ε(model(x), y) + penalty_weight · regularizer(model)`` (ε = label smoothing).

A run directory holds (rank 0 writes, each file replaced atomically):

- ``config.json``    every setting, pdeconv/torch versions, device, world size, parameter count
- ``metrics.jsonl``  one JSON object per epoch: epoch, train_loss, train_acc, test_loss, test_acc, lr,
  img_per_s (training images per second, all ranks), train_s, wall_s (and penalty when one is used; val_loss and
  val_acc with a validation split)
- ``checkpoint.pt``  model, optimizer, scheduler, grad scaler, RNG states, epoch and the metrics so far
- ``events.out.tfevents.*``  TensorBoard scalars, one point per epoch

Resume is exact on the CPU: the data order and augmentation of an epoch are functions of (seed, epoch), the
global RNGs are restored and a resumed run keeps its thread count, so a run stopped after epoch k and resumed
ends bit-identical to an uninterrupted one (same machine and settings). On CUDA, cuDNN's autotuned algorithms,
TF32 and some nondeterministic backward kernels make a resumed run agree only statistically. Under
``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``) the same code runs DistributedDataParallel: gloo on CPU,
NCCL on GPU; ``batch_size`` is the global batch.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import random
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from pdeconv import __version__, autotune, storage
from pdeconv.data import DATASETS, DatasetInfo, build_loaders, dataset_info
from pdeconv.distributed import Processes, agree, broadcast, on_main, start, stop
from pdeconv.errors import PdeconvError
from pdeconv.runtime import check_out_dir, code_revision, cpu_description, set_threads, usable_cpus
from pdeconv.storage import CheckpointError

CHECKPOINT, METRICS, CONFIG = "checkpoint.pt", "metrics.jsonl", "config.json"
LOG_EVERY = 20  # steps between host syncs (progress bar, NaN check); syncing every step slows GPUs

__all__ = [
    "CHECKPOINT",
    "CONFIG",
    "METRICS",
    "CheckpointError",
    "NonFiniteLossError",
    "AmpChoice",
    "BF16_MARGIN",
    "TrainConfig",
    "choose_amp",
    "clear_amp_choices",
    "restore_amp_choices",
    "evaluate",
    "load_checkpoint",
    "lr_factor",
    "resolve_amp",
    "run_summary",
    "summarize",
    "train",
]


class NonFiniteLossError(PdeconvError):
    """The training loss became NaN or infinite; the run stopped before writing anything from it."""


#: ``amp="auto"`` on a CPU takes bf16 only when its measured train step is at least this much faster than float32's
#: (bf16 step ≤ (1 − margin) · float32 step). A convention, not a measured optimum: two timings of a few steps differ
#: from noise alone (more on a loaded machine), and bf16 also rounds activations and gradients, so a gain must be
#: clearly larger than timing noise to be worth the precision; float32 takes the tie. The timings behind each choice
#: are recorded (``amp_choice`` in config.json) and tests/test_engine.py checks the rule on both sides of the margin.
BF16_MARGIN = 0.10

#: What a training setting is to a run (the ``role`` of each :class:`TrainConfig` field):
#: ``identity`` — what is trained: the same for every run of an experiment (unless a variant sets its own: the rate
#: of ``seed+lr=0.4``, :func:`pdeconv.models.variant_training`) and for a run and its resumption;
#: ``run`` — one run's own within an experiment (its variant and seed): fixed for a run, differs between runs;
#: ``placement`` — where and how fast it runs (device, threads, compile, the folder, ...): never makes another run.
ROLES = ("identity", "run", "placement")


def _opt(default: Any, help: str, choices: tuple[str, ...] | None = None, *, role: str = "identity") -> Any:
    return field(default=default, metadata={"help": help, "choices": choices, "role": role})


def settings_of(role: str) -> frozenset[str]:
    """The names of the :class:`TrainConfig` fields of one role (:data:`ROLES`)."""
    if role not in ROLES:
        raise PdeconvError(f"unknown role {role!r}; choose one of: {', '.join(ROLES)}")
    return frozenset(f.name for f in fields(TrainConfig) if f.metadata["role"] == role)


@dataclass
class TrainConfig:
    """Every setting of a training run; ``fields(TrainConfig)`` metadata holds help and choices for a CLI, and each
    setting's role (:data:`ROLES`: identity, run or placement), from which resume, compare and the CLI take what
    makes two runs the same (:func:`settings_of`)."""

    model: str = _opt("pde_resnet20", "model name (recorded; the caller builds the model)")
    variant: str = _opt("baseline", "model variant (recorded; the caller builds the model)", role="run")
    dataset: str = _opt("fashion-mnist", "dataset", tuple(sorted(DATASETS)))
    data_dir: str | None = _opt(None, "folder holding the dataset, searched alone (without it: $PDECONV_DATA, "
                                    "~/.cache/pdeconv, then system folders such as /usr/share/datasets/fashion-mnist)",
                                role="placement")
    train_subset: int | None = _opt(None, "train on a fixed subset of this many images (the same for every seed)")
    val_split: int | None = _opt(None, "hold out this many training images as a validation set (a fixed draw: the "
                                 "same images for every run, variant and seed), evaluated every epoch as val_loss "
                                 "and val_acc; choices read it, never the test set")
    epochs: int = _opt(10, "number of epochs")
    batch_size: int = _opt(128, "global batch size, split evenly across processes")
    lr: float = _opt(0.1, "peak learning rate")
    optimizer: str = _opt("sgd", "optimizer", ("sgd", "adamw"))
    momentum: float = _opt(0.9, "SGD momentum")
    nesterov: bool = _opt(True, "Nesterov momentum (SGD)")
    weight_decay: float = _opt(5e-4, "weight decay (not applied to biases and normalisation weights)")
    schedule: str = _opt("cosine", "learning-rate schedule after warmup (constant: a run can be extended with "
                         "`resume` and more `epochs`)", ("cosine", "onecycle", "constant"))
    warmup_epochs: float | None = _opt(None, "linear warmup length (default: 0 for cosine, 0.3·epochs onecycle)")
    label_smoothing: float = _opt(0.0, "label smoothing ε of the training cross-entropy")
    penalty_weight: float = _opt(0.0, "weight of the regularizer(model) term added to the loss", role="run")
    tta_flip: bool = _opt(False, "evaluate on the mean logits of the image and its mirror image")
    seed: int = _opt(0, "random seed (initialisation, data order, augmentation)", role="run")
    device: str = _opt("auto", "auto, cpu, cuda or cuda:N", role="placement")
    amp: str = _opt("none", "mixed precision (auto: on a CPU, bf16 where a few timed train steps of the model run "
                    f"{BF16_MARGIN:.0%} faster in it, else float32; on a GPU, bf16 from Ampere on, fp16 with a "
                    "gradient scaler on Volta and Turing; a resumed run keeps its choice)",
                    ("none", "bf16", "fp16", "auto"))
    channels_last: bool = _opt(False, "channels-last memory format (faster convolutions on GPUs)")
    compile: bool = _opt(False, "torch.compile the model", role="placement")
    deterministic: bool = _opt(False, "CUDA: deterministic kernels, no cuDNN autotuning, no TF32 (slower; a resumed "
                               "GPU run then continues bit for bit)", role="placement")
    sync_bn: bool = _opt(False, "under torchrun, BatchNorm statistics over the global batch (SyncBatchNorm)")
    threads: str = _opt("auto", "CPU intra-op threads: a count, or auto (the cores idle at the start; a resumed "
                        "run keeps its count; in compare every run and rerun of an experiment takes its first run's "
                        "count, recorded in experiment.json)", role="placement")
    workers: str = _opt("auto", "data-loading processes per training process (image-folder datasets): a count, "
                        "or auto (from the CPUs, at most 8)", role="placement")
    out: str = _opt("runs/train", "run directory", role="placement")
    resume: bool = _opt(False, "continue the run in `out` from its checkpoint", role="placement")
    force: bool = _opt(False, "overwrite a different run already in `out`", role="placement")
    progress: bool = _opt(True, "show a progress bar (only on a terminal)", role="placement")

    def __post_init__(self) -> None:
        # messages name the field in backquotes (pdeconv.errors): the CLI shows its flag instead
        flag = lambda name: f"`{name}`"  # noqa: E731
        for f in fields(self):
            choices = f.metadata["choices"]
            if choices and f.name != "dataset" and getattr(self, f.name) not in choices:
                value = getattr(self, f.name)
                raise PdeconvError(f"unknown {flag(f.name)} {value!r}; choose one of: {', '.join(choices)}")
        self.dataset = dataset_info(self.dataset).name
        for name in ("epochs", "batch_size", "train_subset", "val_split"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise PdeconvError(f"{flag(name)} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise PdeconvError(f"{flag('lr')} must be positive, got {self.lr}")
        if not 0 <= self.label_smoothing < 1:
            raise PdeconvError(f"{flag('label_smoothing')} must be in [0, 1), got {self.label_smoothing}")
        for name in ("penalty_weight", "weight_decay"):
            if getattr(self, name) < 0:
                raise PdeconvError(f"{flag(name)} must not be negative, got {getattr(self, name)}")
        if self.threads != "auto" and not (str(self.threads).isdigit() and int(self.threads) >= 1):
            raise PdeconvError(f"{flag('threads')} must be a positive count or auto, got {self.threads!r}")
        self.threads = str(self.threads)
        if self.workers != "auto" and not str(self.workers).isdigit():
            raise PdeconvError(f"{flag('workers')} must be a count (0 or more) or auto, got {self.workers!r}")
        self.workers = str(self.workers)
        if self.warmup_epochs is not None and not 0 <= self.warmup_epochs <= self.epochs:
            raise PdeconvError(f"{flag('warmup_epochs')} must be between 0 and `epochs` ({self.epochs}), "
                             f"got {self.warmup_epochs}")




# ------------------------------------------------------------------------------------------ pieces


def lr_factor(step: int, *, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based) of ``total``.

    Linear warmup ``(step + 1) / warmup``, then with t ∈ [0, 1) the fraction of the remaining steps done:
    cosine ½(1 + cos πt), onecycle 1 − t (the triangular one-cycle of fast CIFAR recipes), or constant 1 (which
    does not depend on ``total``, so a run can be made longer).
    """
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1 + math.cos(math.pi * t)) if schedule == "cosine" else 1 - t


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD or AdamW; weight decay on weight matrices/kernels only (not on biases and norm scales)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    return torch.optim.AdamW(groups, lr=config.lr)


def resolve_amp(amp: str, device: torch.device) -> str:
    """``amp`` with ``"auto"`` replaced by the rule: ``"bf16"`` where ``device`` has native bfloat16 arithmetic; on
    an older GPU with float16 tensor cores (Volta and Turing: V100, T4; compute capability 7.x) ``"fp16"``, which
    trains with a gradient scaler; else ``"none"``. What ``auto`` means on a GPU, and on a CPU before any
    measurement; :func:`train` measures on CPUs (:func:`choose_amp`), because native is not always faster.

    Native means a CUDA GPU that reports bf16 support (Ampere and later), or a CPU with AVX-512 BF16 or AMX
    instructions (oneDNN then runs convolutions and matrix products in bf16; elsewhere it has no bf16
    instructions and converts in software).
    """
    if amp != "auto":
        return amp
    if device.type == "cuda":  # emulated bf16 (V100, T4) would be slower than float32; their fp16 is fast
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return "bf16"
        return "fp16" if torch.cuda.get_device_capability(device)[0] >= 7 else "none"
    if device.type == "cpu":
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        return "bf16" if native else "none"
    return "none"


#: train steps timed per precision by :func:`choose_amp` (after one warm-up step each), interleaved; a convention
#: (a median of a few steps, at the cost of a few steps of the run's time), not measured
AMP_STEPS = 4


@dataclass(frozen=True)
class AmpChoice:
    """What ``amp`` asked, what runs, why (one line), and the measured median seconds per train step by precision
    (``{"none": s, "bf16": s}``; empty where nothing was measured). Recorded as ``amp_choice`` in config.json."""

    asked: str
    chosen: str
    why: str
    step_s: dict[str, float] = field(default_factory=dict)
    key: str = ""  # what was measured: model, variant, shape, memory format, penalty, threads, CPU

    def line(self) -> str:
        return f"amp {self.asked}: {_PRECISION[self.chosen]} ({self.why})"


_PRECISION = {"none": "float32", "bf16": "bf16", "fp16": "fp16"}
_AMP_CHOICES: dict[str, AmpChoice] = {}  # per process: key (model, shape, batch, threads, ...) → measured choice


def choose_amp(
    config: TrainConfig,
    model: nn.Module,
    input_shape: tuple[int, ...],
    device: torch.device,
    *,
    regularizer: Callable[[nn.Module], torch.Tensor] | None = None,
) -> AmpChoice:
    """What ``config.amp`` runs as on ``device`` for ``model`` and a batch of ``input_shape`` (N, C, H, W).

    Explicit precisions run as asked. ``auto`` on a GPU: :func:`resolve_amp`'s rule (bf16 on Ampere and later, fp16 with
    a gradient scaler on Volta and Turing, float32 before; no measurement). ``auto`` on a CPU is measured, as
    :mod:`pdeconv.autotune` chooses kernels: :data:`AMP_STEPS` train steps (forward, backward, optimizer step) of a copy
    of ``model`` on random data of ``input_shape``, in float32 and under bf16 autocast, interleaved; bf16 wins only when
    its median step is :data:`BF16_MARGIN` faster. The choice is cached for the process per (model, variant, class and
    size, shape, memory format, threads, device): later runs of the same model and shape reuse it. The copy, its
    optimizer and a forked RNG keep the run itself untouched (its weights, statistics and random stream).
    """
    if config.amp != "auto":
        return AmpChoice(config.amp, config.amp, "as asked")
    if device.type != "cpu":
        rule = resolve_amp("auto", device)
        why = {"bf16": "the GPU computes bf16 natively (Ampere or later)",
               "fp16": "this GPU would emulate bf16 (before Ampere) but has float16 tensor cores (Volta, Turing): "
                       "fp16 with a gradient scaler",
               "none": "this GPU would emulate bf16 (before Ampere), slower than float32"}[rule]
        return AmpChoice("auto", rule, why if device.type == "cuda" else f"no bf16 rule for {device.type}")
    params = sum(p.numel() for p in model.parameters())
    key = "|".join(map(str, (config.model, config.variant, type(model).__name__, params,
                             "x".join(map(str, input_shape)), "channels_last" if config.channels_last else "contiguous",
                             config.penalty_weight, torch.get_num_threads(), cpu_description())))
    if key in _AMP_CHOICES:
        cached = _AMP_CHOICES[key]
        return replace(cached, why=f"{cached.why}; measured earlier for this model and shape on this machine")
    seconds = _amp_step_seconds(config, model, input_shape, device, regularizer)
    f32, bf16 = seconds["none"], seconds["bf16"]
    threads = torch.get_num_threads()
    speed = f"bf16 step {1e3 * bf16:.0f} ms against float32 {1e3 * f32:.0f} ms, {threads} thread{'s' * (threads > 1)}"
    if bf16 <= (1 - BF16_MARGIN) * f32:
        choice = AmpChoice("auto", "bf16", f"measured: {speed}, {f32 / bf16:.2f}× faster", seconds, key)
    else:
        choice = AmpChoice("auto", "none", f"measured: {speed}: bf16 is not {BF16_MARGIN:.0%} faster here", seconds,
                           key)
    _AMP_CHOICES[key] = choice
    return choice


def clear_amp_choices() -> None:
    """Forget the precisions ``amp="auto"`` measured in this process (the next run measures again)."""
    _AMP_CHOICES.clear()


def restore_amp_choices(recorded: Iterable[dict[str, Any]]) -> int:
    """Take measured choices recorded by earlier runs (``amp_choice`` of their config.json) as if measured in this
    process, so that a later run of the same model, shape, threads and CPU (a new seed of an experiment) trains in
    the same precision; returns how many were taken. Choices already made here, and records without a measurement,
    are left alone."""
    taken = 0
    for r in recorded:
        if r.get("key") and r.get("step_s") and r.get("chosen") in ("none", "bf16") and r["key"] not in _AMP_CHOICES:
            _AMP_CHOICES[r["key"]] = AmpChoice("auto", r["chosen"], str(r.get("why", "")), dict(r["step_s"]), r["key"])
            taken += 1
    return taken


def _amp_step_seconds(config: TrainConfig, model: nn.Module, input_shape: tuple[int, ...], device: torch.device,
                      regularizer) -> dict[str, float]:
    """Median seconds of a train step of a copy of ``model``, ``{"none": float32, "bf16": under bf16 autocast}``."""
    import copy

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        twin = copy.deepcopy(model).train()
        optimizer = build_optimizer(twin, config)
        x = torch.randn(input_shape, device=device)
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            classes = twin(x[:1]).shape[-1]
        y = torch.randint(0, classes, (input_shape[0],), device=device)

        def step(amp: str) -> float:
            began = time.perf_counter()
            with _autocast(amp, device):
                objective = F.cross_entropy(twin(x), y, label_smoothing=config.label_smoothing)
            if regularizer is not None and config.penalty_weight > 0:
                objective = objective + config.penalty_weight * regularizer(twin)
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()
            return time.perf_counter() - began

        times: dict[str, list[float]] = {"none": [], "bf16": []}
        for amp in times:  # warm-up: allocations and each layer's path measurement (pdeconv.autotune) per dtype
            step(amp)
        for _ in range(AMP_STEPS):
            for amp in times:
                times[amp].append(step(amp))
    return {amp: float(np.median(t)) for amp, t in times.items()}


def _autocast(amp: str, device: torch.device):
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    *,
    device: str | torch.device = "cpu",
    amp: str = "none",
    tta_flip: bool = False,
    channels_last: bool = False,
    prefix: str = "test",
) -> dict[str, float]:
    """Mean cross-entropy and accuracy over ``loader`` (summed over ranks when distributed), as
    ``{prefix}_loss`` and ``{prefix}_acc``.

    With ``tta_flip`` the logits are the mean of those of the image and of its mirror image (x → W−1−x).
    """
    model.eval()
    device = torch.device(device)
    stats = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(amp, device):
            logits = model(x)
            if tta_flip:
                logits = (logits + model(x.flip(-1))) / 2
        stats[0] += F.cross_entropy(logits.float(), y, reduction="sum")
        stats[1] += (logits.argmax(1) == y).sum()
        stats[2] += y.numel()
    loss, correct, count = _all_reduce(stats).tolist()
    return {f"{prefix}_loss": loss / max(count, 1), f"{prefix}_acc": correct / max(count, 1)}


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    *,
    config: TrainConfig,
    device: torch.device,
    epoch: int,
    regularizer: Callable[[nn.Module], torch.Tensor] | None = None,
    raw_model: nn.Module | None = None,
    show_progress: bool = False,
) -> dict[str, float]:
    """One pass over ``loader``; returns train_loss, train_acc (summed over ranks), lr, img_per_s, train_s."""
    model.train()
    raw_model = raw_model or model
    use_penalty = regularizer is not None and config.penalty_weight > 0
    stats = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, correct, count, penalty sum
    bar = tqdm(
        total=len(loader),
        desc=f"epoch {epoch}/{config.epochs}",
        unit="batch",
        leave=False,
        disable=None if show_progress else True,
    )
    start = time.perf_counter()
    for step, (x, y) in enumerate(loader, 1):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(config.amp, device):
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
        objective = loss
        if use_penalty:
            penalty = regularizer(raw_model)  # in float32, outside autocast: it acts on the weights
            objective = loss + config.penalty_weight * penalty
            stats[3] += penalty.detach() * y.numel()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(objective).backward()
        scaler.step(optimizer)
        scaler.update()
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        stats[0] += loss.detach() * y.numel()
        stats[1] += (logits.argmax(1) == y).sum()
        stats[2] += y.numel()
        if step % LOG_EVERY == 0 or step == len(loader):
            loss_sum, correct, count, penalty_sum = _all_reduce(stats.clone()).tolist()  # every rank, same steps
            if not (math.isfinite(loss_sum) and math.isfinite(penalty_sum)):
                value = loss_sum / count if not math.isfinite(loss_sum) else penalty_sum / count
                raise NonFiniteLossError(f"the training loss became {value} in epoch {epoch} (by step {step})")
            elapsed = time.perf_counter() - start
            bar.set_postfix_str(f"loss {loss_sum / count:.4f}  acc {correct / count:.2%}  {count / elapsed:.0f} img/s")
        bar.update()
    bar.close()
    elapsed = time.perf_counter() - start
    record = {
        "train_loss": loss_sum / count,
        "train_acc": correct / count,
        "lr": lr,
        "img_per_s": count / elapsed,
        "train_s": elapsed,
    }
    if use_penalty:
        record["penalty"] = penalty_sum / count
    return record


# ------------------------------------------------------------------------------------------ run bookkeeping


def summarize(history: list[dict[str, Any]], *, params: int | None = None) -> dict[str, Any]:
    """Per-run summary from the epoch records: final and best test accuracy, throughput, time; with a validation
    split also the final validation accuracy and loss and the epoch of the best one (``best_val_epoch``: the
    epoch a choice such as early stopping may take, where ``best_epoch`` reads the test set)."""
    if not history:
        return {"epochs": 0, "params": params}
    last, best = history[-1], max(history, key=lambda r: r["test_acc"])
    train_s = sum(r["train_s"] for r in history)
    val = {}
    if "val_acc" in last:
        best_val = max(history, key=lambda r: r["val_acc"])
        val = {"val_acc": last["val_acc"], "val_loss": last["val_loss"], "best_val_acc": best_val["val_acc"],
               "best_val_epoch": best_val["epoch"]}
    return {
        "epochs": last["epoch"],
        "test_acc": last["test_acc"],
        "test_loss": last["test_loss"],
        "best_test_acc": best["test_acc"],
        "best_epoch": best["epoch"],
        "train_loss": last["train_loss"],
        "train_acc": last["train_acc"],
        "params": params,
        "train_img_per_s": sum(r["img_per_s"] * r["train_s"] for r in history) / train_s,
        "wall_s": sum(r["wall_s"] for r in history),
        **val,
    }


def run_summary(out: str | os.PathLike) -> dict[str, Any]:
    """:func:`summarize` of the run in directory ``out`` (from its files), plus ``finished``."""
    out = Path(out)
    try:
        meta = json.loads((out / CONFIG).read_text())
        lines = (out / METRICS).read_text().splitlines() if (out / METRICS).exists() else []
        history = [json.loads(line) for line in lines if line.strip()]
    except FileNotFoundError:
        raise FileNotFoundError(f"{out} holds no training run (no {CONFIG})") from None
    except json.JSONDecodeError as e:
        raise PdeconvError(f"{out}: unreadable run files ({e})") from None
    summary = summarize(history, params=meta.get("params"))
    summary["finished"] = summary["epochs"] == meta["config"]["epochs"]
    return summary


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's contents (``model`` state dict, ``epoch``, ``metrics``, ``config``, ...); runs no code."""
    return storage.load(path)


def _write_metrics(out: Path, history: list[dict[str, Any]]) -> None:
    storage.write_text(out / METRICS, "".join(json.dumps(r) + "\n" for r in history))


def _prepare_out_dir(config: TrainConfig, out: Path) -> None:
    """Refuse to overwrite another run unless forced; with force, clear it (rank 0 only)."""
    check_out_dir(out)
    if config.resume:
        if not (out / CHECKPOINT).exists():
            started = (out / METRICS).exists()
            raise FileNotFoundError(
                f"nothing to resume: {out / CHECKPOINT} does not exist"
                + ("; the run there stopped before its first checkpoint (the end of its first epoch): start it "
                   "over with `force` instead of `resume`" if started else "; run without `resume`")
            )
        return
    old = [out / CHECKPOINT, out / METRICS, *out.glob("events.out.tfevents.*")] if out.is_dir() else []
    old = [p for p in old if p.exists()]
    if old and not config.force:
        if not (out / CHECKPOINT).exists():
            raise PdeconvError(f"{out} holds a run that stopped before its first checkpoint (nothing to resume); "
                             "pass `force` to start it over")
        raise PdeconvError(f"{out} already holds a run; pass `resume` to continue it or `force` to overwrite it")
    for p in old:
        p.unlink()


def _check_same_run(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    now = asdict(config)
    free = set(settings_of("placement"))  # a resumed run may change where and how fast it runs, not what it trains
    if now.get("amp") == "auto" and saved.get("amp") in ("auto", "none", "bf16"):
        free.add("amp")  # "bf16 where native": a run may move to a device that resolves it otherwise
    if now.get("schedule") == saved.get("schedule") == "constant" and now["epochs"] >= saved.get("epochs", 0):
        free.add("epochs")  # a constant schedule does not depend on the run's length: extending it is exact
    elif now["epochs"] != saved.get("epochs") and all(
        now[k] == saved.get(k) for k in now if k not in free | {"epochs"}
    ):
        raise PdeconvError(
            f"{path} was trained for {saved.get('epochs')} epochs under the {saved.get('schedule')} schedule, which "
            f"spans the run's length: a {now['epochs']}-epoch run would have used other learning rates from the "
            f"start, so it is another run. Train it afresh with `epochs` {now['epochs']} (another `out`), or use "
            "`schedule` constant for runs you want to extend with `resume` and more `epochs`"
        )
    diffs = [f"{k}: {saved.get(k)!r} → {v!r}" for k, v in now.items() if k not in free and saved.get(k) != v]
    if diffs:
        raise PdeconvError(
            f"{path} was trained with other settings ({'; '.join(diffs)}); "
            "resume with the same settings or use another `out`"
        )


def _describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_description()}; {torch.get_num_threads()} threads"


# ------------------------------------------------------------------------------------------ processes


def _set_threads(config: TrainConfig, out: Path, procs: Processes) -> int:
    """Apply ``config.threads`` on the CPU. ``auto``: a resumed run keeps the count it started with (the same
    kernels and summation order, so it continues exactly); a new one :func:`pdeconv.runtime.auto_threads`."""
    if procs.device.type != "cpu":
        return torch.get_num_threads()
    if config.threads != "auto":
        return set_threads(int(config.threads))
    if config.resume:
        try:
            return set_threads(int(json.loads((out / CONFIG).read_text())["config"]["threads"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a run from before threads were recorded: choose anew
    return set_threads("auto")


def _amp_of_run(config: TrainConfig, out: Path, procs: Processes, model: nn.Module, info: DatasetInfo,
                regularizer) -> AmpChoice:
    """The run's precision (:func:`choose_amp`). A resumed ``auto`` run keeps the precision it recorded (no new
    measurement, which might choose otherwise on a busier day), unless it moved to another kind of device; under
    torchrun every rank measures its share of the batch and takes rank 0's choice."""
    if config.amp == "auto" and config.resume:
        recorded = on_main(lambda: _recorded_amp(out, procs.device), main=procs.main)
        if recorded is not None:
            return recorded
    shape = (config.batch_size // procs.world_size, info.in_chans, info.image_size, info.image_size)
    return broadcast(choose_amp(config, model, shape, procs.device, regularizer=regularizer))


def _recorded_amp(out: Path, device: torch.device) -> AmpChoice | None:
    """The precision the run in ``out`` recorded in its config.json, if it ran on the same kind of device."""
    try:
        meta = json.loads((out / CONFIG).read_text())
        if torch.device(meta["device"]).type != device.type:
            return None
        recorded = meta.get("amp_choice") or {"asked": meta["config"]["amp"], "chosen": meta["amp"], "why": ""}
        why = f"recorded by the run being resumed: {recorded['why']}" if recorded["why"] else "recorded by the run"
        return AmpChoice("auto", recorded["chosen"], why, dict(recorded.get("step_s", {})), recorded.get("key", ""))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        return None  # nothing readable recorded: choose anew


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _build_loaders(config: TrainConfig, procs: Processes):
    """The run's loaders. Under torchrun rank 0 reads (and if need be downloads) first, alone, so that several
    processes never download into one cache at once; then every other rank reads without downloading. A rank
    that fails makes every rank fail with its message (no rank waits for a dead one)."""
    kwargs = dict(
        data_dir=config.data_dir, batch_size=config.batch_size // procs.world_size, workers=_workers(config, procs),
        seed=config.seed, rank=procs.rank, world_size=procs.world_size, device=procs.device,
        train_subset=config.train_subset, val_split=config.val_split,
    )
    if procs.world_size == 1:
        return build_loaders(config.dataset, download=True, **kwargs)
    # rank 0 first and alone (it downloads if need be), then everyone reads without downloading
    on_main(lambda: build_loaders(config.dataset, download=True, **kwargs) and None, main=procs.main)
    loaders, error = None, None
    try:
        loaders = build_loaders(config.dataset, download=False, **kwargs)
    except (ValueError, OSError) as e:
        error = FileNotFoundError(f"rank {procs.rank} could not read {config.dataset} ({e}); every machine must "
                                  "see the data: a `data_dir` on a shared filesystem, or a copy on each node")
    agree(error)
    return loaders


def _workers(config: TrainConfig, procs: Processes) -> int:
    """``workers="auto"``: image-folder loading processes per training process, from the CPUs it may share."""
    if config.workers != "auto":
        return int(config.workers)
    return max(1, min(8, usable_cpus() // procs.local_world_size - 1))


# ------------------------------------------------------------------------------------------ train


def train(
    config: TrainConfig,
    build_model: Callable[[DatasetInfo], nn.Module],
    *,
    loaders: tuple[Iterable, Iterable, DatasetInfo] | None = None,
    regularizer: Callable[[nn.Module], torch.Tensor] | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train ``build_model(info)`` as ``config`` says and return :func:`summarize` of the run.

    ``loaders`` (train, test, info) replaces the dataset named in ``config`` (loaders may offer
    ``set_epoch(epoch)``, as :mod:`pdeconv.data`'s do). ``regularizer(model)`` is a scalar added to the loss
    with weight ``config.penalty_weight``. ``on_epoch_end(record)`` runs on every rank after each epoch's
    checkpoint is written. Started by torchrun, this runs DistributedDataParallel across its processes (in the
    process group a caller started with :func:`pdeconv.distributed.start`, or its own). It turns on
    :func:`pdeconv.autotune.enable` for the process (layers then take the fastest exact path measured here; the
    choices are recorded in the checkpoint and config.json and restored on resume).
    """
    if config.penalty_weight > 0 and regularizer is None:
        raise PdeconvError("penalty_weight > 0 needs a regularizer (e.g. the variant's hyperbolicity penalty)")
    autotune.enable()  # a training loop opts into measured layer paths, as training scripts set cudnn.benchmark
    procs = start(config.device, deterministic=config.deterministic)
    summary = _train(config, build_model, procs, loaders, regularizer, on_epoch_end)
    stop(procs)  # only after success: tearing down a group whose peer died can block (see pdeconv.distributed)
    return summary


def _train(config, build_model, procs: Processes, loaders, regularizer, on_epoch_end) -> dict[str, Any]:
    out = Path(config.out)
    ckpt_path = out / CHECKPOINT
    if config.batch_size % procs.world_size:
        raise PdeconvError(f"`batch_size` {config.batch_size} must be divisible by the {procs.world_size} processes")
    if config.amp == "fp16" and procs.device.type == "cpu" and procs.main:
        warnings.warn("`amp` fp16 on a CPU: most CPUs have no fast float16 convolutions, so this usually trains "
                      "several times slower than float32; `amp` auto takes bf16 where a measured train step runs "
                      "faster in it, else float32", stacklevel=2)
    on_main(lambda: _prepare_out_dir(config, out), main=procs.main)
    config = replace(config, threads=str(_set_threads(config, out, procs)))
    _seed_everything(config.seed)
    loaders = loaders or _build_loaders(config, procs)
    train_loader, test_loader, info = loaders
    val_loader = getattr(loaders, "val", None)
    if config.val_split is not None and val_loader is None:
        raise PdeconvError("val_split is set but the loaders given have no validation loader (.val); build them with "
                         "pdeconv.data.build_loaders(..., val_split=N)")
    if len(train_loader) == 0:
        raise PdeconvError("the training loader yields no batches; use a smaller `batch_size`")

    raw = build_model(info).to(procs.device)
    if config.sync_bn and procs.world_size > 1:
        if procs.device.type == "cpu":
            raise PdeconvError("`sync_bn` needs GPUs (PyTorch's SyncBatchNorm runs on CUDA only); on the CPU each "
                             "process normalises its own share of the batch: leave `sync_bn` off")
        raw = nn.SyncBatchNorm.convert_sync_batchnorm(raw)
    if config.channels_last:
        raw = _to_channels_last(raw)
    optimizer = build_optimizer(raw, config)
    scheduler = _scheduler(optimizer, config, steps_per_epoch=len(train_loader))
    amp_choice = _amp_of_run(config, out, procs, raw, info, regularizer)
    amp = amp_choice.chosen  # what runs; the config keeps what was asked ("auto")
    if config.amp == "auto" and procs.main:
        print(amp_choice.line(), flush=True)
    scaler = torch.amp.GradScaler(procs.device.type, enabled=amp == "fp16")
    history: list[dict[str, Any]] = []
    if config.resume:
        history = _restore(ckpt_path, config, raw, optimizer, scheduler, scaler, procs)
    start_epoch = history[-1]["epoch"] if history else 0

    fast = torch.compile(raw) if config.compile else raw
    model = fast
    if procs.world_size > 1:
        model = DistributedDataParallel(fast, device_ids=[procs.device.index] if procs.device.type == "cuda" else None)
    params = sum(p.numel() for p in raw.parameters())
    writer, meta = _open_run(out, config, procs, info, params, history, amp_choice) if procs.main else (None, None)
    running = replace(config, amp=amp)

    try:
        for epoch in range(start_epoch + 1, config.epochs + 1):
            began = time.perf_counter()
            if hasattr(train_loader, "set_epoch"):
                train_loader.set_epoch(epoch)
            try:
                record = train_one_epoch(
                    model, train_loader, optimizer, scheduler, scaler, config=running, device=procs.device,
                    epoch=epoch, regularizer=regularizer, raw_model=raw, show_progress=config.progress and procs.main,
                )
            except NonFiniteLossError as e:
                kept = f", the last good checkpoint {ckpt_path} (epoch {epoch - 1}) is intact" if epoch > 1 else ""
                raise NonFiniteLossError(f"{e}; stopped{kept}; try a lower `lr` or `amp` none") from None
            if procs.world_size > 1:  # BatchNorm statistics: every rank evaluates and saves rank 0's
                for buffer in raw.buffers():
                    dist.broadcast(buffer, 0)
                autotune.restore(broadcast(autotune.chosen()))  # and every rank takes the paths rank 0 measured
            record = {"epoch": epoch, **record}
            evaluation = dict(device=procs.device, amp=amp, tta_flip=config.tta_flip,
                              channels_last=config.channels_last)
            if val_loader is not None:
                record |= evaluate(fast, val_loader, prefix="val", **evaluation)
            record |= evaluate(fast, test_loader, **evaluation)
            record["wall_s"] = time.perf_counter() - began
            history.append(record)
            if procs.main:
                state = {"epoch": epoch, "model": raw.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                         "rng": storage.rng_state(), "metrics": history, "config": asdict(config),
                         "paths": autotune.chosen()}
                storage.save(ckpt_path, state)  # first: the other files are never ahead of it
                meta["paths"] = state["paths"]
                storage.write_text(out / CONFIG, json.dumps(meta, indent=2) + "\n")
                _log_epoch(out, writer, record, history, config.epochs)
            if on_epoch_end is not None:
                on_epoch_end(record)
    finally:
        if writer is not None:
            writer.close()
    return summarize(history, params=params)


def _to_channels_last(model: nn.Module) -> nn.Module:
    """The model in channels-last memory. A 4-D parameter with a dimension of size 1 (depthwise kernels
    (C·m, 1, 3, 3), fields' weights (C, n, 1, 1)) has several stride patterns for one memory layout, and a
    gradient may come back with another than the parameter's: a hook gives it the parameter's strides (a view,
    no copy), so DDP's gradient buckets, laid out like the parameters, take it as is."""
    model = model.to(memory_format=torch.channels_last)
    for p in model.parameters():
        if p.dim() == 4 and 1 in p.shape and p.requires_grad:
            p.register_hook(_strides_of(p))
    return model


def _strides_of(param: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    size, strides = param.shape, param.stride()

    def hook(grad: torch.Tensor) -> torch.Tensor:
        same_memory = all(grad.stride(d) == strides[d] for d in range(grad.dim()) if size[d] > 1)
        if grad.stride() == strides or not same_memory:
            return grad
        return grad.as_strided(size, strides)  # only the strides of size-1 dimensions differ: a view

    return hook


def _scheduler(optimizer, config: TrainConfig, *, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step :func:`lr_factor` schedule (a closure, so its state_dict holds numbers only)."""
    warmup_epochs = config.warmup_epochs
    if warmup_epochs is None:
        warmup_epochs = 0.3 * config.epochs if config.schedule == "onecycle" else 0.0
    warmup, total = round(warmup_epochs * steps_per_epoch), config.epochs * steps_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total=total, warmup=warmup, schedule=config.schedule)
    )


def _restore(path: Path, config: TrainConfig, model, optimizer, scheduler, scaler, procs: Processes
             ) -> list[dict[str, Any]]:
    """Load the checkpoint at ``path`` into the run's objects and the global RNGs; return its metrics.

    Under torchrun rank 0 reads the file and sends its contents to the others, so only rank 0 needs to see the
    run directory; an unreadable or mismatched checkpoint fails every rank with rank 0's message.
    """
    state = on_main(lambda: _checked_state(path, config), main=procs.main)
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        storage.set_rng_state(state["rng"])
        autotune.restore(state.get("paths", {}))  # the same layer paths as before the stop: an exact continuation
        history = list(state["metrics"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: does not fit this model and settings ({first})") from None
    if len(history) != state["epoch"]:
        raise CheckpointError(f"{path}: holds {len(history)} epochs of metrics for epoch {state['epoch']}")
    return history


def _checked_state(path: Path, config: TrainConfig) -> dict[str, Any]:
    state = storage.load(path)
    _check_same_run(state.get("config", {}), config, path)
    return state


def _open_run(out: Path, config: TrainConfig, procs: Processes, info, params: int, history, amp: AmpChoice
              ) -> tuple[Any, dict]:
    """Write config.json and the metrics so far; return the TensorBoard writer and the run's metadata (rank 0
    only). ``paths``: the layer paths chosen so far (:mod:`pdeconv.autotune`), rewritten every epoch; ``amp_choice``:
    what ``amp`` asked, what runs, why and the measured step times (:class:`AmpChoice`)."""
    from torch.utils.tensorboard import SummaryWriter

    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "config": asdict(config),
        "pdeconv_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": str(procs.device),
        "device_name": _describe_device(procs.device),
        "amp": amp.chosen,  # what ran (config.amp is what was asked: "auto" is measured or resolved per device)
        "amp_choice": asdict(amp),
        "world_size": procs.world_size,
        "params": params,
        "dataset": asdict(info),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code": code_revision(),  # pdeconv's checkout (git describe) when this run started; None outside one
        "paths": autotune.chosen(),
    }
    if history and (out / CONFIG).is_file():  # a resumption: the run started earlier, perhaps on other code
        before = json.loads((out / CONFIG).read_text())
        resumed = {"at": meta["started"], "epoch": len(history), "code": meta["code"],
                   "device_name": meta["device_name"]}
        meta["resumed"] = [*before.get("resumed", []), resumed]
        meta["started"], meta["code"] = before.get("started", meta["started"]), before.get("code")
    storage.write_text(out / CONFIG, json.dumps(meta, indent=2) + "\n")
    _write_metrics(out, history)  # drops any epoch logged after the checkpoint we resume from
    return SummaryWriter(str(out), purge_step=len(history) + 1 if history else None), meta


def _log_epoch(out: Path, writer, record: dict[str, Any], history: list[dict[str, Any]], epochs: int) -> None:
    _write_metrics(out, history)
    for key, value in record.items():
        if key != "epoch":
            writer.add_scalar(key, value, record["epoch"])
    writer.flush()
    val = f"val loss {record['val_loss']:.4f} acc {record['val_acc']:.2%}  " if "val_acc" in record else ""
    print(
        f"epoch {record['epoch']}/{epochs}  train loss {record['train_loss']:.4f} acc {record['train_acc']:.2%}  "
        f"{val}test loss {record['test_loss']:.4f} acc {record['test_acc']:.2%}  lr {record['lr']:.4g}  "
        f"{record['img_per_s']:.0f} img/s  {record['wall_s']:.1f} s",
        flush=True,
    )
