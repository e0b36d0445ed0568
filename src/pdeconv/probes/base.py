"""A probe and what it measured (the types every probe module shares)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class Probe:
    """A probe: the essay's sentence it tests, its prediction (written before it is run), its arms, and
    ``trial(seed, quick) → {arm: {metric: value}}`` (one seed of every arm). A probe with ``needs_runs`` reads
    trained runs instead (``pdeconv probe NAME --runs DIR ...``): its arms are the runs' variants and it has no
    trial of its own."""

    name: str
    essay: str
    prediction: str
    arms: tuple[str, ...]
    metric: str  # the metric the arms are compared on
    higher_is_better: bool
    trial: Callable[[int, bool], dict[str, dict[str, float]]] | None = None
    verdict: Callable[[dict[str, list[float]], dict[str, dict[str, list[float]]]], tuple[bool, str]] | None = None
    needs_runs: bool = False


@dataclass
class ProbeResult:
    """What :func:`run_probe` measured and wrote."""

    probe: str
    seeds: list[int]
    metrics: dict[str, dict[str, list[float]]]  # arm → metric → one value per seed
    held: bool
    verdict: str
    files: list[Path] = field(default_factory=list)


def _fit(model: nn.Module, batch: Callable[[], tuple[Tensor, Tensor]], steps: int, lr: float) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        x, y = batch()
        loss = F.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
