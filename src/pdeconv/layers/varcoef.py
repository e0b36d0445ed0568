"""Variable coefficients: multiply a layer's output by learned polynomial fields (the essay's third idea).

``VariableCoefficients(u)[n, c, i, j] = u[n, c, i, j] · a_c(x_j, y_i)`` with
``a_c(x, y) = Σ_k weight[c, k] · P_k(x, y)``, where ``P`` are the monomials ``x^b y^a`` of total degree ≤ d
ordered by degree, x-powers first (d = 2: the essay's ``1, x, y, x², xy, y²``; n = (d + 1)(d + 2)/2).

Coordinates: x runs along the columns (width W), y along the rows (height H, pointing down), both over the
pixel centres of [−1, 1]: ``x_j = (2j + 1)/W − 1``, ``y_i = (2i + 1)/H − 1``, symmetric about 0 for any H, W.
``seed_compatible=True`` instead reproduces the essay's Bottleneck bit for bit: ``x_j = 2j/W − 1``,
``y_i = 2i/H − 1`` (so x runs over [−1, 1 − 2/W]), monomials in float64, then cast to the input's dtype.

Speed: in training the product has its own backward. autograd's generic one forms ``g·u`` at full size and
reduces it over the batch with a 4-D ``sum_to_size``; here the batch sum accumulates sample by sample into one
field-sized buffer, in the input's memory layout (measured against autograd's: ``[plain]`` rows of
``python benchmarks/blocks.py --plain``, benchmarks/results/blocks.jsonl).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pdeconv.stencil import multi_indices

__all__ = ["VariableCoefficients", "monomials"]

_INITS = ("identity", "default")


def _check_degree(degree: int, seed_compatible: bool) -> None:
    if degree < 0:
        raise ValueError(f"degree must be ≥ 0; got {degree}")
    if seed_compatible and degree != 2:
        raise ValueError(f"seed_compatible=True reproduces the essay's 6 monomials: use degree=2, not {degree}")


def _axis(n: int, seed_compatible: bool) -> Tensor:
    i = torch.arange(n, dtype=torch.float64)
    # the essay's np.indices(...) * 2 / n - 1, operation for operation; else the centred pixel centres
    return i * 2 / n - 1 if seed_compatible else (2 * i + 1) / n - 1


def monomials(
    H: int,
    W: int,
    degree: int = 2,
    *,
    seed_compatible: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """The monomials ``x^b y^a`` (total degree ≤ ``degree``) on an H×W grid, shape ``(1, n, H, W)``.

    Order: ``stencil.multi_indices(degree)`` read as ``(a, b) → y^a x^b``, i.e. 1, x, y, x², xy, y², ...
    Computed in float64 (powers by repeated products, as the essay's ``XX*XX``), then cast to ``dtype``
    (default: torch's default dtype) on ``device``.
    """
    _check_degree(degree, seed_compatible)
    x, y = _axis(W, seed_compatible), _axis(H, seed_compatible)
    xp, yp = [torch.ones_like(x)], [torch.ones_like(y)]
    for _ in range(degree):
        xp.append(xp[-1] * x)
        yp.append(yp[-1] * y)
    grid = torch.stack([yp[a][:, None] * xp[b][None, :] for a, b in multi_indices(degree)])
    return grid.unsqueeze(0).to(device=device, dtype=torch.get_default_dtype() if dtype is None else dtype)


def _channels_last(t: Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def _rows(t: Tensor, channels_last: bool) -> Tensor:
    """(N, C, H, W) as (N, H·W·C) (channels_last order) or (N, C·H·W): a view when t is stored so."""
    return (t.permute(0, 2, 3, 1) if channels_last else t).reshape(t.shape[0], -1)


class _Modulate(torch.autograd.Function):
    """``u · a`` for u (N, C, H, W) and a (1, C, H, W); backward ``(g·a, Σ_n g_n·u_n)``."""

    @staticmethod
    def forward(ctx, u: Tensor, a: Tensor) -> Tensor:
        ctx.save_for_backward(u, a)
        return u * a

    @staticmethod
    def backward(ctx, grad: Tensor):
        u, a = ctx.saved_tensors
        grad_u = grad * a if ctx.needs_input_grad[0] else None
        grad_a = None
        if ctx.needs_input_grad[1]:
            channels_last = _channels_last(u)  # sum in u's memory order: u is read in place
            g, v = _rows(grad, channels_last), _rows(u, channels_last)
            acc = g[0] * v[0]
            for n in range(1, len(g)):
                acc.addcmul_(g[n], v[n])
            if channels_last:
                grad_a = acc.view(1, u.shape[2], u.shape[3], u.shape[1]).permute(0, 3, 1, 2)
            else:
                grad_a = acc.view(1, *u.shape[1:])
        return grad_u, grad_a


class VariableCoefficients(nn.Module):
    """``u ↦ u · a(x, y)``: per-channel polynomial coefficient fields, ``a = weight ⋆ monomials`` (1×1 map).

    The only parameter is ``weight`` of shape ``(channels, n, 1, 1)``, the weight of
    ``nn.Conv2d(n, channels, 1, bias=False)``, so a state dict of the essay's ``self.mix = conv1x1(6, C)``
    loads as is (the constant monomial plays the bias). ``init="identity"`` starts from ``a ≡ 1``
    (``weight[:, 0] = 1``, the rest 0), so inserting the layer leaves a network unchanged;
    ``init="default"`` is ``nn.Conv2d``'s kaiming-uniform init, what the essay's plain conv1x1 gets.

    The monomial grid is a non-persistent buffer rebuilt only when (H, W, dtype, device) changes.
    """

    grid: Tensor

    def __init__(
        self, channels: int, degree: int = 2, *, seed_compatible: bool = False, init: str = "identity"
    ) -> None:
        super().__init__()
        _check_degree(degree, seed_compatible)
        if init not in _INITS:
            raise ValueError(f"unknown init {init!r}; valid ones: {', '.join(_INITS)}")
        self.channels, self.degree, self.seed_compatible, self.init = channels, degree, seed_compatible, init
        self.weight = nn.Parameter(torch.empty(channels, len(multi_indices(degree)), 1, 1))
        self.register_buffer("grid", torch.empty(0), persistent=False)
        self._grid_key: tuple | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.init == "identity":
            with torch.no_grad():
                self.weight.zero_()
                self.weight[:, 0] = 1.0
        else:
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # as nn.Conv2d.reset_parameters

    def _monomials(self, H: int, W: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        key = (H, W, dtype, device)
        # the buffer's own dtype/device are checked too: .to()/.half() move it without rebuilding it
        if key == self._grid_key and self.grid.dtype == dtype and self.grid.device == device:
            return self.grid
        grid = monomials(H, W, self.degree, seed_compatible=self.seed_compatible, dtype=dtype, device=device)
        # an exported program cannot resize a buffer: it keeps the grid as constants computed in its graph
        if not torch.compiler.is_exporting():
            self.grid, self._grid_key = grid, key
        return grid

    def field(
        self, H: int, W: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        """The fields ``a_c(x_j, y_i)``, shape ``(1, C, H, W)``; dtype and device default to the weight's."""
        dtype = self.weight.dtype if dtype is None else dtype
        device = torch.device(device) if device is not None else self.weight.device
        # the essay's self.mix(self.XY); under autocast conv2d picks the autocast dtype
        return F.conv2d(self._monomials(H, W, dtype, device), self.weight.to(dtype))

    @torch.no_grad()
    def coefficient_fields(self, H: int, W: int) -> Tensor:
        """Detached fields ``(C, H, W)`` for plotting (row i is y_i, column j is x_j)."""
        return self.field(H, W)[0].detach()

    def forward(self, u: Tensor) -> Tensor:
        a = self.field(u.shape[-2], u.shape[-1], u.dtype, u.device)
        traced = torch.compiler.is_compiling() or torch.compiler.is_exporting()
        if u.dim() != 4 or traced or not (torch.is_grad_enabled() and (u.requires_grad or a.requires_grad)):
            return u * a  # nothing to save for a backward, or the compiler fuses the product itself
        return _Modulate.apply(u, a)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, degree={self.degree}, monomials={self.weight.shape[1]}, "
            f"seed_compatible={self.seed_compatible}, init={self.init!r}"
        )
