"""Variable coefficients: multiply a layer's output by learned polynomial fields (the essay's third idea).

``VariableCoefficients(u)[n, c, i, j] = u[n, c, i, j] · a_c(x_j, y_i)`` with
``a_c(x, y) = Σ_k weight[c, k] · P_k(x, y)``, where ``P`` are the monomials ``x^b y^a`` of total degree ≤ d
ordered by degree, x-powers first (d = 2: the essay's ``1, x, y, x², xy, y²``; n = (d + 1)(d + 2)/2).

Coordinates: x runs along the columns (width W), y along the rows (height H, pointing down), both over the
pixel centres of [−1, 1]: ``x_j = (2j + 1)/W − 1``, ``y_i = (2i + 1)/H − 1``, symmetric about 0 for any H, W.
``seed_compatible=True`` instead reproduces the essay's Bottleneck bit for bit: ``x_j = 2j/W − 1``,
``y_i = 2i/H − 1`` (so x runs over [−1, 1 − 2/W]), monomials in float64, then cast to the input's dtype.

Training: the product has its own backward, whose field gradient ``Σ_n g_n·u_n`` is one matrix product over the
batch in the input's memory order (accumulated in float32 also under bf16 autocast), where autograd's generic
backward reduces with a slower 4-D ``sum_to_size``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pdeconv.autotune import is_channels_last
from pdeconv.errors import PdeconvError
from pdeconv.layers._input import batched
from pdeconv.stencil import multi_indices

__all__ = ["VariableCoefficients", "monomials"]

_INITS = ("identity", "default")


def _check_degree(degree: int, seed_compatible: bool) -> None:
    if degree < 0:
        raise PdeconvError(f"degree must be ≥ 0; got {degree}")
    if seed_compatible and degree != 2:
        raise PdeconvError(f"seed_compatible=True reproduces the essay's 6 monomials: use degree=2, not {degree}")


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


def _field(weight: Tensor, grid: Tensor, channels_last: bool) -> Tensor:
    """``a = weight ⋆ grid`` for weight (C, n) and grid (n, H, W): (1, C, H, W), channels-last or not."""
    n, H, W = grid.shape
    if channels_last:  # (H·W, n) @ (n, C) is the (1, H, W, C) memory of a channels-last (1, C, H, W)
        return (grid.reshape(n, -1).T @ weight.T).view(1, H, W, -1).permute(0, 3, 1, 2)
    return (weight @ grid.reshape(n, -1)).view(1, -1, H, W)


class _Modulate(torch.autograd.Function):
    """``u · a`` with ``a = weight ⋆ grid``, for u (N, C, H, W), weight (C, n), grid (n, H, W), one autograd node.

    Backward: ``g·a`` for u; for the weight ``Σ_{n,y,x} g·u·P_k``, the batch sum first as a matrix product
    ``ones(1, N) @ (g·u)`` viewed (N, pixels) in u's memory order (a reduction over the outermost axis ran 3–5×
    faster as a GEMM than as a sum: ``python benchmarks/varcoef_reduction.py``, BENCHMARKS.md; GEMMs accumulate
    in float32 under bf16), then the contraction with the monomials.
    """

    @staticmethod
    def forward(ctx, u: Tensor, weight: Tensor, grid: Tensor) -> Tensor:
        a = _field(weight, grid, is_channels_last(u))
        ctx.save_for_backward(u, a, grid)
        return u * a

    @staticmethod
    def backward(ctx, grad: Tensor):
        u, a, grid = ctx.saved_tensors
        grad_u = grad * a if ctx.needs_input_grad[0] else None
        grad_w = None
        if ctx.needs_input_grad[1]:
            N, C, H, W = u.shape
            product = grad * u
            channels_last = is_channels_last(product)
            rows = (product.permute(0, 2, 3, 1) if channels_last else product).reshape(N, -1)
            total = product.new_ones(1, N) @ rows  # Σ_n, (1, H·W·C) or (1, C·H·W)
            monomials = grid.reshape(grid.shape[0], -1)  # (n, H·W)
            if channels_last:
                grad_w = (monomials @ total.view(H * W, C)).T  # (C, n)
            else:
                grad_w = total.view(C, H * W) @ monomials.T
        return grad_u, grad_w, None


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
            raise PdeconvError(f"unknown init {init!r}; valid ones: {', '.join(_INITS)}")
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
        # an exported or compiled graph cannot resize a buffer (a compiler would recompile on it): it keeps the
        # grid as constants computed in its graph
        if not (torch.compiler.is_exporting() or torch.compiler.is_compiling() or torch.jit.is_tracing()):
            self.grid, self._grid_key = grid, key
        return grid

    def field(
        self,
        H: int,
        W: int,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        *,
        channels_last: bool = False,
    ) -> Tensor:
        """The fields ``a_c(x_j, y_i)``, shape ``(1, C, H, W)``; dtype and device default to the weight's.

        The essay's ``self.mix(self.XY)``, a 1×1 convolution of the monomials, computed as the matrix product
        it is (under autocast in the autocast dtype), laid out channels-last (``channels_last=True``, for
        channels-last inputs: a broadcast product over mismatched layouts ran 10× slower on the CPU) or not.
        """
        dtype = self.weight.dtype if dtype is None else dtype
        device = torch.device(device) if device is not None else self.weight.device
        return _field(self.weight.to(dtype)[:, :, 0, 0], self._monomials(H, W, dtype, device)[0], channels_last)

    @torch.no_grad()
    def coefficient_fields(self, H: int, W: int) -> Tensor:
        """Detached fields ``(C, H, W)`` for plotting (row i is y_i, column j is x_j)."""
        return self.field(H, W)[0].detach()

    def forward(self, u: Tensor) -> Tensor:
        return batched(self, u, self.channels, self._modulate)

    def _modulate(self, u: Tensor) -> Tensor:
        H, W = u.shape[-2:]
        traced = torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()
        wants_grad = torch.is_grad_enabled() and (u.requires_grad or self.weight.requires_grad)
        if traced or not wants_grad:  # nothing to save for a backward, or a compiler fuses it
            return u * self.field(H, W, u.dtype, u.device, channels_last=is_channels_last(u))
        weight = self.weight.to(u.dtype)[:, :, 0, 0]  # under autocast: the dtype of u, as conv2d would cast
        with torch.autocast(u.device.type, enabled=False):
            return _Modulate.apply(u, weight, self._monomials(H, W, u.dtype, u.device)[0])

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, degree={self.degree}, monomials={self.weight.shape[1]}, "
            f"seed_compatible={self.seed_compatible}, init={self.init!r}"
        )
