"""The hyperbolicity regularizer: how far is each learned convolution from a symmetric hyperbolic operator?

A C→C convolution is the operator ``Σ_{a,b} A_ab ∂_y^a ∂_x^b`` with C×C matrices ``A_ab``
(:func:`pdeconv.stencil.operator_matrices`; grouped convs block-diagonal, spacing h = the dilation). It is
symmetric hyperbolic, ``A_01·∂x + A_10·∂y + A_00`` with A_01, A_10 symmetric and A_00 skew, exactly when

* ``antisymmetric = ‖skew(A_01)‖² + ‖skew(A_10)‖²`` (skew(M) = (M − Mᵀ)/2),
* ``diffusive = Σ_{a+b≥2} ‖A_ab‖²`` (second- and higher-order, diffusive/dispersive, part),
* ``zeroth = ‖sym(A_00)‖²`` (sym(M) = (M + Mᵀ)/2; a symmetric hyperbolic system has a skew C)

all vanish. Each term is divided by the layer's moment energy ``E = Σ_{a,b} ‖A_ab‖²`` (Frobenius norms), so
it is scale-free and the three add up to at most 1 (0 for a zero weight). Only ``nn.Conv2d`` layers with
C_in = C_out and a square odd kernel of size ≥ 3 are read; biases and any following BatchNorm scale are not.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from pdeconv.stencil import system_moments

__all__ = ["hyperbolicity_penalty", "hyperbolicity"]

TERMS = ("antisymmetric", "diffusive", "zeroth")


def _hyperbolic_candidates(model: nn.Module) -> Iterator[tuple[str, nn.Conv2d]]:
    for name, m in model.named_modules():
        if (
            isinstance(m, nn.Conv2d)
            and m.in_channels == m.out_channels
            and m.kernel_size[0] == m.kernel_size[1] >= 3
            and m.kernel_size[0] % 2 == 1
            and m.dilation[0] == m.dilation[1]
        ):
            yield name, m


def _terms(weight: Tensor, groups: int, h: float) -> Tensor:
    """The three normalised terms (antisymmetric, diffusive, zeroth) of conv weights, shape (..., 3).

    ``weight`` is one conv weight ``(C_out, C_in/groups, k, k)`` or a stack of them with leading dimensions (the
    penalty batches layers of one shape: a few tensor ops instead of dozens per layer).
    """
    M = system_moments(weight, groups, h)  # (..., C, C, k, k), A_ab = M[..., a, b]
    k = M.shape[-1]
    energy = M.square().sum((-4, -3, -2, -1))
    first = torch.stack([M[..., 0, 1], M[..., 1, 0]], -1)  # (..., C, C, 2)
    antisymmetric = ((first - first.transpose(-3, -2)) / 2).square().sum((-3, -2, -1))
    order = torch.arange(k, device=M.device)
    high = (order[:, None] + order[None, :]) >= 2
    diffusive = (M.square() * high).sum((-4, -3, -2, -1))
    zero = M[..., 0, 0]
    zeroth = ((zero + zero.transpose(-2, -1)) / 2).square().sum((-2, -1))
    terms = torch.stack([antisymmetric, diffusive, zeroth], -1)
    return terms / energy.clamp_min(torch.finfo(energy.dtype).tiny)[..., None]


def _all_terms(convs: Sequence[nn.Conv2d]) -> Tensor:
    """``_terms`` of every conv, shape (len(convs), 3): convs of one weight shape, groups, dtype, device and
    spacing are stacked and computed together."""
    out: list[Tensor | None] = [None] * len(convs)
    batches: dict[tuple, list[int]] = {}
    for i, m in enumerate(convs):
        key = (tuple(m.weight.shape), m.groups, m.weight.dtype, m.weight.device, m.dilation[0])
        batches.setdefault(key, []).append(i)
    for (_, groups, _, _, h), idx in batches.items():
        terms = _terms(torch.stack([convs[i].weight for i in idx]), groups, h)
        for j, i in enumerate(idx):
            out[i] = terms[j]
    return torch.stack(out)


def _weights(weights: Sequence[float] | Mapping[str, float]) -> tuple[float, float, float]:
    if isinstance(weights, Mapping):
        unknown = set(weights) - set(TERMS)
        if unknown:
            raise ValueError(f"unknown hyperbolicity weights {sorted(unknown)}; valid keys: {', '.join(TERMS)}")
        w = tuple(float(weights.get(k, 1.0)) for k in TERMS)
    else:
        w = tuple(float(v) for v in weights)
    if len(w) != 3 or min(w) < 0:
        raise ValueError(f"weights must be 3 numbers ≥ 0 ({', '.join(TERMS)}); got {weights!r}")
    return w


def hyperbolicity_penalty(
    model: nn.Module, weights: Sequence[float] | Mapping[str, float] = (1.0, 1.0, 1.0)
) -> Tensor:
    """Differentiable ``mean over layers of (w_a·antisymmetric + w_d·diffusive + w_0·zeroth) / E`` (see module).

    ``weights`` is ``(w_antisymmetric, w_diffusive, w_zeroth)`` or a dict with those keys (missing ones 1).
    Each layer contributes a value in ``[0, max(w)]``; a model without such convs gives a zero tensor on the
    device of its parameters. Add it, times a coefficient, to the loss.
    """
    w = _weights(weights)
    convs = [m for _, m in _hyperbolic_candidates(model)]
    if not convs:
        device = next(model.parameters(), torch.empty(0)).device
        return torch.zeros((), device=device)
    terms = _all_terms(convs)
    return (w[0] * terms[:, 0] + w[1] * terms[:, 1] + w[2] * terms[:, 2]).mean()  # Python floats: no host copy


@torch.no_grad()
def hyperbolicity(model: nn.Module) -> dict[str, float]:
    """``{module name: 1 − (antisymmetric + diffusive + zeroth)/E}`` ∈ [0, 1]; 1 = exactly symmetric hyperbolic.

    Computed in float64 for every C→C conv with a square odd kernel ≥ 3 (see module); 0 means that the
    operator has no first-order symmetric or zeroth-order skew part at all (e.g. a Laplacian).
    """
    return {
        name: min(1.0, max(0.0, 1.0 - float(_terms(m.weight.double(), m.groups, m.dilation[0]).sum())))
        for name, m in _hyperbolic_candidates(model)
    }
