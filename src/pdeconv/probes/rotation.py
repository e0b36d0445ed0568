"""The rotation probe: can a PDE net rotate an image about its centre, with constant or with variable coefficients?"""

from __future__ import annotations

import math
import statistics

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pdeconv import stencil
from pdeconv.layers import VariableCoefficients
from pdeconv.layers.varcoef import monomials
from pdeconv.probes.base import _fit

_ROTATION_ANGLE = math.pi / 8  # 22.5°


def _blobs(n: int, size: int, g: torch.Generator) -> Tensor:
    """n images (n, 1, size, size) of 3–6 Gaussian blobs inside the central disc of radius 0.55 (so a rotation
    keeps them on the grid), coordinates pixel-centred in [−1, 1]."""
    c = (2 * torch.arange(size) + 1) / size - 1
    y, x = c[:, None], c[None, :]
    out = torch.zeros(n, 1, size, size)
    for i in range(n):
        for _ in range(int(torch.randint(3, 7, (1,), generator=g))):
            r, phi = 0.55 * float(torch.rand(1, generator=g)) ** 0.5, 2 * math.pi * float(torch.rand(1, generator=g))
            width = 0.08 + 0.12 * float(torch.rand(1, generator=g))
            cx, cy = r * math.cos(phi), r * math.sin(phi)
            out[i, 0] += torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * width**2))
    return out


def _rotate(u: Tensor, angle: float) -> Tensor:
    """u rotated by ``angle`` about the centre as the flow v = (−y, x) carries it (bilinear resampling)."""
    cos, sin = math.cos(angle), math.sin(angle)
    theta = torch.tensor([[[cos, sin, 0.0], [-sin, cos, 0.0]]], dtype=u.dtype).expand(u.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(u.shape), align_corners=False)
    return F.grid_sample(u, grid, align_corners=False)


class _PDELayer(nn.Module):
    """``u ← u + Σ_k a_k(x, y)·(K_k ⋆ u)``: ``operators`` learned 3×3 kernels, each times its field of ``degree``."""

    def __init__(self, operators: int, degree: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, operators, 3, padding=1, bias=False)
        nn.init.normal_(self.conv.weight, std=0.01)
        self.fields = VariableCoefficients(operators, degree)  # a ≡ 1 at the start

    def forward(self, u: Tensor) -> Tensor:
        return u + self.fields(self.conv(u)).sum(1, keepdim=True)


def _velocity_alignment(model: nn.Sequential, size: int) -> float:
    """Cosine similarity, over the disc of radius 0.6, between the learned first-order coefficient fields
    ``(c_x, c_y) = Σ_layers Σ_k a_k(x, y)·(∂x, ∂y coefficient of K_k)`` and the rotation's ``(y, −x)``."""
    cx, cy = torch.zeros(size, size), torch.zeros(size, size)
    with torch.no_grad():
        for layer in model:
            moments = stencil.moments(layer.conv.weight[:, 0].double())  # (operators, 3, 3): M[a, b] of ∂y^a ∂x^b
            fields = layer.fields.field(size, size, dtype=torch.float64)[0]  # (operators, H, W)
            cx += (fields * moments[:, 0, 1, None, None]).sum(0).float()
            cy += (fields * moments[:, 1, 0, None, None]).sum(0).float()
    grid = monomials(size, size, 1, dtype=torch.float32)[0]  # 1, x, y
    x, y = grid[1], grid[2]
    inside = x**2 + y**2 <= 0.36
    learned = torch.stack([cx[inside], cy[inside]]).flatten()
    true = torch.stack([y[inside], -x[inside]]).flatten()
    return float(learned @ true / (learned.norm() * true.norm() + 1e-12))


def _rotation_trial(seed: int, quick: bool) -> dict[str, dict[str, float]]:
    size, layers, steps = 32, 8, (120 if quick else 600)
    test = _blobs(64, size, torch.Generator().manual_seed(10_000 + seed))
    target = _rotate(test, _ROTATION_ANGLE)
    result = {}
    for arm, degree in (("constant", 0), ("variable", 2)):
        g = torch.Generator().manual_seed(seed)  # the same training images for both arms
        torch.manual_seed(seed)  # the same kernels (the fields start at a ≡ 1 in both)
        model = nn.Sequential(*[_PDELayer(2, degree) for _ in range(layers)])

        def batch(g=g):
            u = _blobs(16, size, g)
            return u, _rotate(u, _ROTATION_ANGLE)

        _fit(model, batch, steps, lr=1e-2)
        with torch.no_grad():
            error = float((model(test) - target).square().sum() / (test - target).square().sum())
        result[arm] = {"relative_error": error, "velocity_alignment": _velocity_alignment(model, size)}
    return result


def _rotation_verdict(values, metrics) -> tuple[bool, str]:
    const, var = statistics.fmean(values["constant"]), statistics.fmean(values["variable"])
    align = statistics.fmean(metrics["variable"]["velocity_alignment"])
    held = bool(const > 0.5 and var < 0.2 and align > 0.9)
    return held, (f"constant coefficients: relative error {const:.3f} (predicted > 0.5); degree-2 fields: "
                  f"{var:.3f} (predicted < 0.2); their learned (c_x, c_y) align with (y, −x) at cosine {align:.3f} "
                  f"(predicted > 0.9)")
