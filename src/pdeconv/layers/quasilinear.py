"""A quasilinear block: a quadratic coupling in place of the activation, before the differential step.

``QuasiLinear(u) = D(a ⊙ b)`` with ``(a, b) = split(W₁ u)``: ``W₁`` a 1×1 conv ``C → 2C`` whose output is cut
into two halves of C channels, ``⊙`` the elementwise product, ``D`` a :class:`DifferentialConv2d` (depthwise
3×3 differential operators, then the 1×1 mix). As a residual update ``u ← u + D(a(u) ⊙ b(u))`` this is a
quasilinear PDE ``u_t = D(a(u) ⊙ b(u))``: the operator's coefficients depend on u itself (with a = b = u,
``∂x(u·u)/2 = u·∂x u`` is Burgers' flux). Without biases the block is homogeneous of degree 2 in u.
After the essay author's later quasilinear hyperbolic systems block (arXiv 2308.01621), which could not be
consulted here; the formula above is the one implemented.
"""

from __future__ import annotations

from torch import Tensor, nn

from pdeconv.layers._input import batched
from pdeconv.layers.differential import DifferentialConv2d

__all__ = ["QuasiLinear"]


class QuasiLinear(nn.Module):
    """``u ↦ D(a ⊙ b)``, ``(a, b) = split(expand(u))``; ``expand = nn.Conv2d(C, 2C, 1, bias=bias)``.

    ``differential`` is ``DifferentialConv2d(C, multiplier, order, bc, stride, mix, out_channels)``, so the
    block can replace the 3×3 stage of a residual block (``stride`` to downsample, ``out_channels`` to widen).
    """

    def __init__(
        self,
        channels: int,
        multiplier: int = 4,
        *,
        order: int | None = None,
        bc: str = "dirichlet",
        stride: int = 1,
        mix: bool = True,
        out_channels: int | None = None,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.expand = nn.Conv2d(channels, 2 * channels, 1, bias=bias)
        self.differential = DifferentialConv2d(channels, multiplier, order, bc, stride, mix, out_channels)

    def forward(self, u: Tensor) -> Tensor:
        return batched(self, u, self.expand.in_channels, self._step)

    def _step(self, u: Tensor) -> Tensor:
        a, b = self.expand(u).chunk(2, dim=1)
        return self.differential(a * b)
