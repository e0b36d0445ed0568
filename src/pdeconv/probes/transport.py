"""The transport probe: L composed 3×3 convolutions learn a k-pixel shift exactly when L ≥ k?"""

from __future__ import annotations

import statistics

import torch
from torch import nn

from pdeconv.probes.base import _fit

_SHIFTS, _DEPTHS = (1, 2, 3), (1, 2, 3, 4)


def _transport_trial(seed: int, quick: bool) -> dict[str, dict[str, float]]:
    """Each (k, L) cell: ``restarts`` fits from random kernels; the best one's test error (can it be learned?)
    and the median's (how often one fit finds it: products of kernels have poor local minima)."""
    size, steps, restarts = 16, (120 if quick else 400), (2 if quick else 4)
    test = torch.randn(32, 1, size, size, generator=torch.Generator().manual_seed(10_000 + seed))
    result: dict[str, dict[str, float]] = {}
    for k in _SHIFTS:
        target = torch.roll(test, k, dims=-1)
        for depth in _DEPTHS:
            errors = []
            for restart in range(restarts):
                g = torch.Generator().manual_seed(seed)  # the same training images in every cell and restart
                torch.manual_seed(1000 * seed + restart)
                convs = [nn.Conv2d(1, 1, 3, padding=1, bias=False, padding_mode="circular") for _ in range(depth)]
                for conv in convs:
                    nn.init.normal_(conv.weight, std=0.4)
                model = nn.Sequential(*convs)

                def batch(g=g, k=k):
                    u = torch.randn(8, 1, size, size, generator=g)
                    return u, torch.roll(u, k, dims=-1)

                _fit(model, batch, steps, lr=0.03)
                with torch.no_grad():
                    errors.append(float((model(test) - target).square().sum() / target.square().sum()))
            result[f"shift {k}, {depth} layers"] = {"relative_error": min(errors),
                                                    "median_single_fit": statistics.median(errors)}
    return result


def _cell(arm: str) -> tuple[int, int]:
    """(k, L) of a transport arm ``"shift k, L layers"``."""
    k, depth = (int(s.split()[0]) for s in arm.replace("shift ", "").split(", "))
    return k, depth


def _transport_verdict(values, metrics) -> tuple[bool, str]:
    reach = {arm: statistics.fmean(v) for arm, v in values.items()}
    ok = []
    for arm, error in reach.items():
        k, depth = _cell(arm)
        ok.append(error < 1e-2 if depth >= k else error > 0.95)
    worst_in = max((e for a, e in reach.items() if _reaches(a)), default=float("nan"))
    best_out = min((e for a, e in reach.items() if not _reaches(a)), default=float("nan"))
    return all(ok), (f"best of the restarts: largest error where L ≥ k {worst_in:.2e} (predicted < 1e-2); "
                     f"smallest where L < k {best_out:.3f} (predicted > 0.95)")


def _reaches(arm: str) -> bool:
    k, depth = _cell(arm)
    return depth >= k
