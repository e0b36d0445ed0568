"""The hyperbolicity regularizer: how far is each learned convolution from a symmetric hyperbolic operator?

A C→C convolution is the operator ``Σ_{a,b} A_ab ∂_y^a ∂_x^b`` with C×C matrices ``A_ab``
(:func:`pdeconv.stencil.operator_matrices`; grouped convs block-diagonal, spacing h = the dilation). It is
symmetric hyperbolic, ``A_01·∂x + A_10·∂y + A_00`` with A_01, A_10 symmetric and A_00 skew, exactly when

* ``antisymmetric = ‖skew(A_01)‖² + ‖skew(A_10)‖²`` (skew(M) = (M − Mᵀ)/2),
* ``diffusive = Σ_{a+b≥2} ‖A_ab‖²`` (second- and higher-order, diffusive/dispersive, part),
* ``zeroth = ‖sym(A_00)‖²`` (sym(M) = (M + Mᵀ)/2; a symmetric hyperbolic system has a skew C)

all vanish. Each term is divided by the layer's moment energy ``E = Σ_{a,b} ‖A_ab‖²`` (Frobenius norms). The
three are disjoint shares of E, so they add up to at most 1 (0 for a zero weight), and a layer's weighted
penalty lies in ``[0, max(w)]`` (in [0, 1] with the default weights).

The layers read, each as its C×C matrix of operators (square, odd kernels of size ≥ 3):

* ``nn.Conv2d`` with C_in = C_out (biases and any following BatchNorm scale are not read);
* :class:`~pdeconv.layers.DifferentialConv2d` with its 1×1 and ``out_channels == channels``: the dense
  operator ``W[o, c] = Σ_j P[o, c·m + j] K[c·m + j]`` (:meth:`~pdeconv.layers.DifferentialConv2d.folded_weight`);
* :class:`~pdeconv.layers.SymmetricHyperbolic2d`: ``A·Dx + B·Dy + C − γ`` at its grid spacing (symmetric
  hyperbolic by construction; only its damping γ scores).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pdeconv.errors import PdeconvError
from pdeconv.stencil import system_moments

__all__ = ["hyperbolicity_penalty", "hyperbolicity", "scored_layers"]

TERMS = ("antisymmetric", "diffusive", "zeroth")


@dataclass
class _Operator:
    """A layer read as a C×C matrix of differential operators: ``weight()`` (C, C/groups, k, k) at spacing h."""

    name: str
    kind: str
    weight: Callable[[], Tensor]
    groups: int
    h: float


def _operators(model: nn.Module) -> Iterator[_Operator]:
    from pdeconv.layers import DifferentialConv2d, SymmetricHyperbolic2d

    for name, m in model.named_modules():
        if (
            isinstance(m, nn.Conv2d)
            and m.in_channels == m.out_channels
            and m.kernel_size[0] == m.kernel_size[1] >= 3
            and m.kernel_size[0] % 2 == 1
            and m.dilation[0] == m.dilation[1]
        ):
            yield _Operator(name, "Conv2d", lambda m=m: m.weight, m.groups, float(m.dilation[0]))
        elif isinstance(m, DifferentialConv2d) and m.pointwise is not None and m.out_channels == m.channels:
            yield _Operator(name, "DifferentialConv2d", m.folded_weight, 1, 1.0)
        elif isinstance(m, SymmetricHyperbolic2d):
            def weight(m=m) -> Tensor:
                damping = torch.zeros(3, 3, dtype=m.P.dtype, device=m.P.device)
                damping[1, 1] = 1.0
                return m.kernel() - m.gamma * torch.eye(m.channels, dtype=m.P.dtype, device=m.P.device)[
                    ..., None, None] * damping
            yield _Operator(name, "SymmetricHyperbolic2d", weight, 1, m.spacing)


def scored_layers(model: nn.Module) -> dict[str, str]:
    """The layers :func:`hyperbolicity` and the penalty read, ``{module name: kind}``."""
    return {op.name: op.kind for op in _operators(model)}


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


def _all_terms(operators: Sequence[_Operator]) -> Tensor:
    """``_terms`` of every operator, shape (len(operators), 3): weights of one shape, groups, dtype, device and
    spacing are stacked and computed together."""
    weights = [op.weight() for op in operators]
    out: list[Tensor | None] = [None] * len(operators)
    batches: dict[tuple, list[int]] = {}
    for i, (op, w) in enumerate(zip(operators, weights)):
        batches.setdefault((tuple(w.shape), op.groups, w.dtype, w.device, op.h), []).append(i)
    for (_, groups, _, _, h), idx in batches.items():
        terms = _terms(torch.stack([weights[i] for i in idx]), groups, h)
        for j, i in enumerate(idx):
            out[i] = terms[j]
    return torch.stack(out)


def _weights(weights: Sequence[float] | Mapping[str, float]) -> tuple[float, float, float]:
    if isinstance(weights, Mapping):
        unknown = set(weights) - set(TERMS)
        if unknown:
            raise PdeconvError(f"unknown hyperbolicity weights {sorted(unknown)}; valid keys: {', '.join(TERMS)}")
        w = tuple(float(weights.get(k, 1.0)) for k in TERMS)
    else:
        w = tuple(float(v) for v in weights)
    if len(w) != 3 or min(w) < 0:
        raise PdeconvError(f"weights must be 3 numbers ≥ 0 ({', '.join(TERMS)}); got {weights!r}")
    return w


def hyperbolicity_penalty(
    model: nn.Module, weights: Sequence[float] | Mapping[str, float] = (1.0, 1.0, 1.0)
) -> Tensor:
    """Differentiable ``mean over layers of (w_a·antisymmetric + w_d·diffusive + w_0·zeroth) / E`` (see module).

    ``weights`` is ``(w_antisymmetric, w_diffusive, w_zeroth)`` or a dict with those keys (missing ones 1).
    Each layer contributes a value in ``[0, max(w)]``; the layers read are :func:`scored_layers`'s. A model
    without such layers gives a zero tensor on the device of its parameters. Add it, times a coefficient, to
    the loss.
    """
    w = _weights(weights)
    operators = list(_operators(model))
    if not operators:
        device = next(model.parameters(), torch.empty(0)).device
        return torch.zeros((), device=device)
    terms = _all_terms(operators)
    return (w[0] * terms[:, 0] + w[1] * terms[:, 1] + w[2] * terms[:, 2]).mean()  # Python floats: no host copy


@torch.no_grad()
def hyperbolicity(model: nn.Module) -> dict[str, float]:
    """``{module name: 1 − (antisymmetric + diffusive + zeroth)/E}`` ∈ [0, 1]; 1 = exactly symmetric hyperbolic.

    Computed in float64 for every layer :func:`scored_layers` lists (see module); 0 means that the operator has
    no first-order symmetric or zeroth-order skew part at all (e.g. a Laplacian).
    """
    return {
        op.name: min(1.0, max(0.0, 1.0 - float(_terms(op.weight().double(), op.groups, op.h).sum())))
        for op in _operators(model)
    }
