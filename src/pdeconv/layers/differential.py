"""The essay's differential convolution: ``C --(3×3, groups=C)--> C·m --(1×1)--> C_out``.

Each input channel ``c`` is hit by ``m`` learned 3×3 kernels, i.e. ``m`` differential operators of order ≤ 2
(up to higher-order terms, see :mod:`pdeconv.stencil`): output channel ``c·m + j`` is ``K_{c·m+j} ⋆ u_c``,
as ``nn.Conv2d(C, C·m, 3, groups=C)`` orders them. An optional 1×1 conv then takes linear combinations.
Padding 1 is the boundary condition ``bc`` (:mod:`pdeconv.boundary`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pdeconv import boundary
from pdeconv.stencil import basis, moments, multi_indices, operator_name

__all__ = ["DifferentialConv2d"]


class DifferentialConv2d(nn.Module):
    """Depthwise 3×3 differential operators (``multiplier`` per channel), then an optional 1×1 mix.

    ``order=None``: free kernels, the parameter ``weight`` of shape ``(C·m, 1, 3, 3)`` with ``nn.Conv2d``'s
    init, so with ``mix=False`` the layer is ``nn.Conv2d(C, C·m, 3, stride, 1, groups=C, bias=False)``
    (same state-dict key and output).

    ``order=k`` (0 ≤ k ≤ 4): kernel ``K_i = Σ_n coefficients[i, n] · B_n`` with ``B = stencil.basis(k)``,
    the kernels whose only nonzero moment is one operator of total order ≤ k (k = 2: 1, ∂x, ∂y, ∂x², ∂x∂y,
    ∂y²), so ``coefficients`` are operator coefficients (h = 1) and K is that operator by construction.
    Init: the orthogonal projection of an ``nn.Conv2d``-initialised kernel onto span(B), times ``√(9/n)``,
    so that ``E‖K‖²`` (the output variance on white noise) equals the free init's.
    ``mix=True`` adds ``pointwise = nn.Conv2d(C·m, out_channels or C, 1, bias=False)``.
    """

    def __init__(
        self,
        channels: int,
        multiplier: int = 4,
        order: int | None = None,
        bc: str = "dirichlet",
        stride: int = 1,
        mix: bool = True,
        out_channels: int | None = None,
    ) -> None:
        super().__init__()
        boundary.padding_mode(bc)  # validates the name
        if channels < 1 or multiplier < 1 or stride < 1:
            raise ValueError(f"channels, multiplier, stride must be ≥ 1; got {channels}, {multiplier}, {stride}")
        if order is not None and not 0 <= order <= 4:
            raise ValueError(f"order must be None (free kernels) or 0..4 (3×3 holds up to ∂x²∂y²); got {order}")
        if out_channels is not None and not mix:
            raise ValueError("out_channels needs mix=True; without the 1×1 conv there are channels·multiplier outputs")
        self.channels, self.multiplier, self.order = channels, multiplier, order
        self.bc, self.stride = bc, stride
        self.out_channels = (out_channels or channels) if mix else channels * multiplier
        if order is None:
            self.weight = nn.Parameter(torch.empty(channels * multiplier, 1, 3, 3))
        else:
            self.register_buffer("basis", basis(order, 3, dtype=torch.get_default_dtype()), persistent=False)
            self.coefficients = nn.Parameter(torch.empty(channels * multiplier, len(self.basis)))
        self._reset_depthwise()  # before the 1×1 conv draws its init: the RNG order of the essay's two convs
        self.pointwise = nn.Conv2d(channels * multiplier, self.out_channels, 1, bias=False) if mix else None

    def reset_parameters(self) -> None:
        self._reset_depthwise()
        if self.pointwise is not None:
            self.pointwise.reset_parameters()

    def _reset_depthwise(self) -> None:
        device = (self.weight if self.order is None else self.coefficients).device
        free = torch.empty(self.channels * self.multiplier, 1, 3, 3, device=device)
        nn.init.kaiming_uniform_(free, a=math.sqrt(5))  # nn.Conv2d's init
        with torch.no_grad():
            if self.order is None:
                self.weight.copy_(free)
            else:
                B = basis(self.order, 3, dtype=torch.float64).flatten(1)
                least_squares = torch.linalg.pinv(B.T).T.to(free)  # (9, n): kernel ↦ its coefficients
                self.coefficients.copy_(free.flatten(1) @ least_squares * math.sqrt(9 / len(B)))

    @property
    def kernel(self) -> Tensor:
        """The effective depthwise weight ``(C·m, 1, 3, 3)`` in both modes (differentiable)."""
        if self.order is None:
            return self.weight
        return torch.einsum("kn,nij->kij", self.coefficients, self.basis).unsqueeze(1)

    def operators(self) -> dict[str, Tensor]:
        """Operator coefficients ``{name: (C, m)}``, e.g. ``"∂x²"``, of order ≤ 2 (``order=None``) or ≤ ``order``.

        For ``order=None`` these are the free kernels' moments (h = 1), higher moments left out; otherwise the
        ``coefficients`` themselves. Differentiable.
        """
        shape = (self.channels, self.multiplier)
        if self.order is not None:
            names = map(operator_name, multi_indices(self.order, size=3))
            return {name: c.reshape(shape) for name, c in zip(names, self.coefficients.unbind(1))}
        M = moments(self.weight[:, 0])
        return {operator_name((a, b)): M[:, a, b].reshape(shape) for a, b in multi_indices(2)}

    def forward(self, u: Tensor) -> Tensor:
        if self.bc == "dirichlet":  # conv2d's own zero padding is the fastest path
            out = F.conv2d(u, self.kernel, stride=self.stride, padding=1, groups=self.channels)
        else:
            out = F.conv2d(boundary.pad(u, 1, self.bc), self.kernel, stride=self.stride, groups=self.channels)
        return out if self.pointwise is None else self.pointwise(out)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, multiplier={self.multiplier}, order={self.order}, bc={self.bc!r}, "
            f"stride={self.stride}, out_channels={self.out_channels}"
        )
