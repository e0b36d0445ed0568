"""The learnable PDE ``u_t = Σ_j c_j(x, y) · θ_j(u, ∂u, ∂²u, ...)`` built from moment-constrained filters (PDE-Net).

Each derivative ``∂_y^a ∂_x^b`` is a ``size × size`` convolution whose moments (:mod:`pdeconv.stencil`) are fixed
to ``M[a, b] = 1`` and ``M[a', b'] = 0`` for every other total order ``< size``, so the filter is a
finite-difference approximation of order ``size − a − b`` whatever its free (higher) moments learn; with them at
zero it is the tensor product of the 1-D central differences. Filters act in grid units and are divided by
``dy^a · dx^b``; boundaries are padded by :func:`pdeconv.boundary.pad` (periodic data: the same circular
convolution, computed by FFT).

Coefficients are fields in a basis ``Φ`` orthonormal on the grid (mean of ``Φ_m Φ_n`` is ``δ_mn``):
``Φ = 1`` for constant coefficients, low-degree Fourier modes (periodic data) or polynomials in ``x, y ∈ [−1, 1]``
for variable ones. They are stored normalised, ``c_j = (s_u / s_j) Σ_m ĉ_jm Φ_m`` with ``s_j`` the RMS of term j and
``s_u`` that of ``u_t``, so ``|ĉ|`` is the share of ``u_t`` a term explains and one threshold fits every PDE.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pdeconv.boundary import pad
from pdeconv.discover.library import Term
from pdeconv.layers.steppers import RK4, runge_kutta_step
from pdeconv.layers.varcoef import monomials
from pdeconv.stencil import kernel_from_moments, moment_constraints

__all__ = ["Derivatives", "PolynomialPDE", "coefficient_basis"]


class Derivatives(nn.Module):
    """``u (N, C, H, W) ↦ (N, C, P, H, W)``: the derivatives ``orders[p] = (a, b)`` (``∂_y^a ∂_x^b``) of every field."""

    #: a unit of a free parameter moves a filter entry by at most this much (grid units): well scaled for L-BFGS
    FREE_STEP = 1e-2

    def __init__(
        self, orders: list[tuple[int, int]], *, size: int, dx: float, dy: float, bc: str, learn_moments: bool = True
    ):
        super().__init__()
        if size % 2 == 0 or size < 3:
            raise ValueError(f"kernel size must be odd and ≥ 3; got {size}")
        top = max((a + b for a, b in orders), default=0)
        if top >= size:
            raise ValueError(f"a {size}×{size} filter cannot hold order-{top} derivatives; use kernel size ≥ {top + 1}")
        self.orders = list(orders)
        self.size, self.bc = size, bc
        values, free = [], []
        for a, b in self.orders:
            v, fixed = moment_constraints((a, b), size, accuracy=size - a - b)
            values.append(v)
            free.append(~fixed)
        empty = torch.zeros(0, size, size, dtype=torch.float64)
        self.register_buffer("values", torch.stack(values) if values else empty)
        free_mask = torch.stack(free).to(torch.float64) if free else torch.zeros_like(self.values)
        scale = [1.0 / (dy**a * dx**b) for a, b in self.orders]
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float64).view(-1, 1, 1))
        unit = torch.eye(size * size, dtype=torch.float64).view(-1, size, size)
        reach = kernel_from_moments(unit).abs().amax(dim=(-2, -1)).view(size, size)
        self.register_buffer("free_unit", free_mask * self.FREE_STEP / reach)
        self.free_moments = nn.Parameter(torch.zeros_like(self.values), requires_grad=learn_moments)

    def moments(self) -> Tensor:
        """Moments ``(P, size, size)`` of the filters in grid units: the fixed ones plus the learnt free ones."""
        return self.values + self.free_moments * self.free_unit

    def kernels(self) -> Tensor:
        """The filters ``(P, size, size)`` in physical units (divided by ``dy^a dx^b``)."""
        return kernel_from_moments(self.moments()) * self.scale

    def operator(self, h: int, w: int) -> Tensor:
        """What :meth:`forward` applies on an ``h × w`` grid: the filters' Fourier symbols ``(P, h, w//2 + 1)``
        for periodic data (the circular convolution, by FFT), else the filters ``(P, size, size)``.

        Computing it once per rollout instead of once per right-hand side saves most of the filter cost.
        """
        k = self.kernels()
        if self.bc != "periodic" or not self.orders:
            return k
        if self.size > min(h, w):
            raise ValueError(f"the {h}×{w} grid is smaller than the {self.size}×{self.size} filters")
        r = self.size // 2
        rows = torch.arange(-r, r + 1).neg().remainder(h)  # K[p, q] acts as the circular kernel at (−p, −q)
        cols = torch.arange(-r, r + 1).neg().remainder(w)
        full = k.new_zeros(k.shape[0], h, w)
        full[:, rows[:, None], cols[None, :]] = k
        return torch.fft.rfft2(full)

    def forward(self, u: Tensor, operator: Tensor | None = None) -> Tensor:
        n, c, h, w = u.shape
        if not self.orders:
            return u.new_zeros(n, c, 0, h, w)
        op = (self.operator(h, w) if operator is None else operator).to(device=u.device)
        if self.bc == "periodic":
            return torch.fft.irfft2(torch.fft.rfft2(u).unsqueeze(2) * op, s=(h, w))
        r = self.size // 2
        out = F.conv2d(pad(u.reshape(n * c, 1, h, w), r, self.bc), op.to(u.dtype).unsqueeze(1))
        return out.view(n, c, len(self.orders), h, w)


def coefficient_basis(H: int, W: int, *, degree: int | None, bc: str) -> Tensor:
    """An orthonormal basis ``(M, H, W)`` of coefficient fields: mean over the grid of ``Φ_m Φ_n`` is ``δ_mn``.

    ``degree=None``: the constant 1 (M = 1). Periodic data: the products ``f(kx')·g(ly')`` of ``1, cos, sin`` with
    ``k, l ≤ degree`` (``x' = 2πj/W``, ``y' = 2πi/H``; M = (2·degree + 1)²). Other boundaries: the monomials
    ``x^b y^a`` of total degree ≤ ``degree`` on ``[−1, 1]²`` (:func:`pdeconv.layers.varcoef.monomials`),
    orthonormalised on the grid.
    """
    if degree is None:
        return torch.ones(1, H, W, dtype=torch.float64)
    if degree < 0:
        raise ValueError(f"degree must be ≥ 0; got {degree}")
    if bc == "periodic":
        if 2 * degree + 1 > min(H, W):
            raise ValueError(f"a {H}×{W} grid resolves Fourier coefficient fields up to degree {(min(H, W) - 1) // 2}")
        x = torch.arange(W, dtype=torch.float64) * 2 * math.pi / W
        y = torch.arange(H, dtype=torch.float64) * 2 * math.pi / H

        def waves(t: Tensor) -> list[Tensor]:
            out = [torch.ones_like(t)]
            for k in range(1, degree + 1):
                out += [math.sqrt(2) * torch.cos(k * t), math.sqrt(2) * torch.sin(k * t)]
            return out

        return torch.stack([gy[:, None] * gx[None, :] for gy in waves(y) for gx in waves(x)])
    raw = monomials(H, W, degree, dtype=torch.float64)[0].reshape(-1, H * W)
    q, _ = torch.linalg.qr(raw.T)
    return (q.T * math.sqrt(H * W)).reshape(-1, H, W)


class PolynomialPDE(nn.Module):
    """``u_t = F(u)`` for ``C`` fields: one equation per field, a coefficient field per library term.

    Parameters: ``coefficients`` ``(C, J, M)`` (normalised, see the module docstring) and the derivative filters'
    free moments. ``mask`` ``(C, J, M)`` switches pruned terms (or the variable part of a field) off.
    ``forward(u)`` gives ``u_t`` for ``u (N, C, H, W)``; :meth:`rollout` integrates with RK4 over ``dt`` in
    ``substeps`` steps (PDE-Net's δt-blocks).
    """

    def __init__(
        self,
        terms: list[Term],
        components: tuple[str, ...],
        *,
        shape: tuple[int, int],
        dx: float,
        dy: float,
        bc: str,
        kernel_size: int = 7,
        degree: int | None = None,
        learn_moments: bool = True,
    ):
        super().__init__()
        self.terms, self.components = list(terms), tuple(components)
        orders = {ab for t in terms for ab in t.derivatives if ab != (0, 0)}
        self.orders = sorted(orders, key=lambda ab: (sum(ab), ab[0]))
        self.derivatives = Derivatives(self.orders, size=kernel_size, dx=dx, dy=dy, bc=bc, learn_moments=learn_moments)
        slot = {ab: i + 1 for i, ab in enumerate(self.orders)}
        slot[(0, 0)] = 0
        self._factors = [[(c, slot[ab]) for c, ab in t.factors] for t in terms]
        self.register_buffer("basis", coefficient_basis(*shape, degree=degree, bc=bc))
        C, J, M = len(components), len(terms), self.basis.shape[0]
        self.coefficients = nn.Parameter(torch.zeros(C, J, M, dtype=torch.float64))
        self.register_buffer("scale", torch.ones(C, J, dtype=torch.float64))  # c = scale · ĉ
        self.register_buffer("mask", torch.ones(C, J, M, dtype=torch.float64))
        self.dx, self.dy, self.bc, self.degree = dx, dy, bc, degree
        self.kernel_size, self.shape = kernel_size, tuple(shape)

    def restricted(self) -> PolynomialPDE:
        """A copy holding only the terms active in some equation (cheaper to evaluate), same coefficients."""
        keep = (self.mask > 0).any(-1).any(0).nonzero().flatten().tolist()
        new = PolynomialPDE(
            [self.terms[j] for j in keep], self.components, shape=self.shape, dx=self.dx, dy=self.dy, bc=self.bc,
            kernel_size=self.kernel_size, degree=self.degree,
            learn_moments=self.derivatives.free_moments.requires_grad,
        )
        with torch.no_grad():
            for name in ("coefficients", "scale", "mask"):
                getattr(new, name).copy_(getattr(self, name)[:, keep])
            for p_new, ab in enumerate(new.orders):
                new.derivatives.free_moments[p_new] = self.derivatives.free_moments[self.orders.index(ab)]
        return new

    def max_rate(self, u: Tensor) -> float:
        """A bound on the spectral radius of ``∂F/∂u`` over states like ``u`` (product rule, filter symbols).

        Each term contributes ``max|c| · Σ_f S_f · Π_{g ≠ f} max|g|`` over its factors, where ``S_f`` is the largest
        Fourier magnitude of factor f's filter (1 for a plain field) and ``max|g|`` is taken over ``u``.
        """
        with torch.no_grad():
            d = torch.cat([u.unsqueeze(2), self.derivatives(u)], dim=2)  # (N, C, 1 + P, H, W)
            size = d.abs().amax(dim=(0, 3, 4))  # (C, 1 + P)
            gain = [1.0]  # a plain field
            if self.orders:
                k = self.derivatives.kernels()
                h, w = self.shape
                sym = torch.fft.fft2(k, s=(max(h, k.shape[-1]), max(w, k.shape[-1]))).abs().amax(dim=(-2, -1))
                gain += sym.tolist()
            cmax = self.fields().abs().amax(dim=(-2, -1))  # (C, J)
            rate = 0.0
            for j, factors in enumerate(self._factors):
                c_j = float(cmax[:, j].max())
                for i, (_, p) in enumerate(factors):
                    others = [float(size[c2, p2]) for i2, (c2, p2) in enumerate(factors) if i2 != i]
                    rate += c_j * float(gain[p]) * math.prod(others)
            return rate

    def stable_substeps(self, u: Tensor, dt: float, minimum: int = 1) -> int:
        """RK4 steps per ``dt`` that keep ``h · rate ≤ 2`` (inside RK4's stability region on both axes)."""
        return max(minimum, math.ceil(dt * self.max_rate(u) / 2.0))

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.terms]

    def features(self, u: Tensor, operator: Tensor | None = None) -> Tensor:
        """The library ``θ_j(u)`` on the grid, shape ``(N, J, H, W)``."""
        if not self._factors:
            return u.new_zeros(u.shape[0], 0, *u.shape[2:])
        d = torch.cat([u.unsqueeze(2), self.derivatives(u, operator)], dim=2)  # (N, C, 1 + P, H, W)
        parts = d.flatten(1, 2).unbind(1)  # one backward node instead of one per factor
        width = d.shape[2]
        out = []
        for factors in self._factors:
            if not factors:
                out.append(torch.ones_like(parts[0]))
                continue
            f = parts[factors[0][0] * width + factors[0][1]]
            for c, p in factors[1:]:
                f = f * parts[c * width + p]
            out.append(f)
        return torch.stack(out, dim=1)

    def fields(self) -> Tensor:
        """Coefficient fields ``c_j(x, y)`` in physical units, ``(C, J, H, W)`` (zero for pruned terms)."""
        c = (self.coefficients * self.mask * self.scale.unsqueeze(-1)).to(self.basis.dtype)
        return torch.einsum("ejm,mhw->ejhw", c, self.basis)

    def prepare(self) -> tuple[Tensor, Tensor]:
        """The parameters in the form :meth:`forward` uses: physical coefficients (``(C, J)`` if constant, else
        the fields ``(C, J, H, W)``) and the filters' :meth:`Derivatives.operator`. Reused across a rollout."""
        if self.basis.shape[0] == 1:
            c = self.coefficients[..., 0] * self.scale * self.mask[..., 0]
        else:
            c = self.fields()
        return c, self.derivatives.operator(*self.shape)

    def forward(self, u: Tensor, prepared: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """``u_t = Σ_j c_j θ_j(u)`` for ``u (N, C, H, W)``; ``prepared`` reuses a :meth:`prepare` result."""
        c, op = self.prepare() if prepared is None else prepared
        theta = self.features(u, op)
        if c.dim() == 2:
            return torch.einsum("njhw,ej->nehw", theta, c.to(u.dtype))
        return torch.einsum("njhw,ejhw->nehw", theta, c.to(u.dtype))

    def step(self, u: Tensor, dt: float, substeps: int = 1, prepared: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """One time step ``dt`` of classical RK4 in ``substeps`` equal parts."""
        p = self.prepare() if prepared is None else prepared
        h = dt / substeps
        for _ in range(substeps):
            u = runge_kutta_step(lambda v: self(v, p), u, h, RK4)
        return u

    def rollout(self, u0: Tensor, steps: int, dt: float, substeps: int = 1) -> Tensor:
        """Frames ``(N, steps + 1, C, H, W)`` from ``u0 (N, C, H, W)`` at times ``0, dt, ..., steps·dt``."""
        p = self.prepare()
        out = [u0]
        for _ in range(steps):
            out.append(self.step(out[-1], dt, substeps, p))
        return torch.stack(out, dim=1)

    def equations(self) -> dict[str, dict[str, float]]:
        """``{field: {term: coefficient}}`` of the active terms: the constant, or the mean of a variable field."""
        with torch.no_grad():
            f = self.fields().mean(dim=(-2, -1))
        active = (self.mask > 0).any(-1)
        return {
            e: {n: float(f[i, j]) for j, n in enumerate(self.names) if active[i, j]}
            for i, e in enumerate(self.components)
        }
