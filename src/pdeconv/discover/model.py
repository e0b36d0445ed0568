"""The learnable PDE ``u_t = Σ_j c_j(x, y) · θ_j(u, ∂u, ∂²u, ...)`` built from moment-constrained filters (PDE-Net).

Each derivative ``∂_y^a ∂_x^b`` is a ``size × size`` convolution whose moments (:mod:`pdeconv.stencil`) are fixed
to ``M[a, b] = 1`` and ``M[a', b'] = 0`` for every other total order ``< size``, so the filter is a
finite-difference approximation of order ``size − a − b`` whatever its free (higher) moments learn; with them at
zero it is the tensor product of the 1-D central differences. Filters act in grid units and are divided by
``dy^a · dx^b``; boundaries are padded by :func:`pdeconv.boundary.pad` (periodic data: the same circular
convolution, computed by FFT).

Coefficients are fields in a basis ``Φ`` orthonormal on the grid (mean of ``Φ_m Φ_n`` is ``δ_mn``):
``Φ = 1`` for constant coefficients, low-degree Fourier modes (periodic data) or polynomials in ``x, y ∈ [−1, 1]``
for variable ones. The fit learns them normalised (the parameter ``normalised``, ``ĉ``),
``c_j = (s_u / s_j) Σ_m ĉ_jm Φ_m`` with ``s_j`` the RMS of term j and ``s_u`` that of ``u_t``, so ``|ĉ|`` is the
share of ``u_t`` a term explains and one threshold fits every PDE; ``PolynomialPDE.coefficients`` are the ``c``
in the data's units (what ``equations()`` and ``pde.json`` give).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pdeconv.boundary import pad
from pdeconv.discover.library import Term
from pdeconv.errors import PdeconvError
from pdeconv.layers.steppers import RK4, integrating_factor_rk4_step, runge_kutta_step
from pdeconv.layers.varcoef import monomials
from pdeconv.stencil import kernel_from_moments, moment_constraints, multi_indices

__all__ = ["Derivatives", "PolynomialPDE", "coefficient_basis"]


def _space(t: Tensor, dims: int) -> tuple[int, ...]:
    """The indices of the last ``dims`` axes of ``t``."""
    return tuple(range(t.dim() - dims, t.dim()))


class Derivatives(nn.Module):
    """``u (N, C, *space) ↦ (N, C, P, *space)``: the derivatives ``orders[p]`` of every field.

    ``orders`` are multi-indices with one entry per space axis, in array order (``(a, b)`` = ``∂_y^a ∂_x^b`` in
    2-D, ``(b,)`` in 1-D, ``(c, a, b)`` in 3-D); ``spacing`` is the grid spacing per axis in the same order. Filters
    are ``size`` long along every axis.
    """

    #: a unit of a free parameter moves a filter entry by at most this much (grid units): well scaled for L-BFGS
    FREE_STEP = 1e-2

    def __init__(
        self, orders: list[tuple[int, ...]], *, size: int, spacing: tuple[float, ...], bc: str,
        learn_moments: bool = True,
    ):
        super().__init__()
        dims = len(spacing)
        if dims not in (1, 2, 3) or any(len(o) != dims for o in orders):
            raise PdeconvError(f"orders need one entry per space axis of spacing {spacing}; got {orders}")
        if size % 2 == 0 or size < 3:
            raise PdeconvError(f"kernel size must be odd and ≥ 3; got {size}")
        top = max((sum(o) for o in orders), default=0)
        if top >= size:
            raise PdeconvError(f"a {size}-point filter cannot hold order-{top} derivatives; use kernel size ≥ "
                             f"{top + 1 + top % 2}")
        self.orders, self.dims = [tuple(o) for o in orders], dims
        self.size, self.bc = size, bc
        values, free = [], []
        for o in self.orders:
            v, fixed = moment_constraints(o, size, accuracy=size - sum(o))
            values.append(v)
            free.append(~fixed)
        empty = torch.zeros(0, *(size,) * dims, dtype=torch.float64)
        self.register_buffer("values", torch.stack(values) if values else empty)
        free_mask = torch.stack(free).to(torch.float64) if free else torch.zeros_like(self.values)
        scale = [1.0 / math.prod(h**k for h, k in zip(spacing, o, strict=True)) for o in self.orders]
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float64).view(-1, *(1,) * dims))
        unit = torch.eye(size**dims, dtype=torch.float64).view(-1, *(size,) * dims)
        reach = kernel_from_moments(unit, dims=dims).abs().flatten(1).amax(dim=1).view(*(size,) * dims)
        self.register_buffer("free_unit", free_mask * self.FREE_STEP / reach)
        self.free_moments = nn.Parameter(torch.zeros_like(self.values), requires_grad=learn_moments)

    def moments(self) -> Tensor:
        """Moments ``(P, *size)`` of the filters in grid units: the fixed ones plus the learnt free ones."""
        return self.values + self.free_moments * self.free_unit

    def kernels(self) -> Tensor:
        """The filters ``(P, size, ..., size)`` in physical units (divided by ``dy^a dx^b``)."""
        return kernel_from_moments(self.moments(), dims=self.dims) * self.scale

    def operator(self, *space: int) -> Tensor:
        """What :meth:`forward` applies on a grid of ``space`` points per axis: the filters' Fourier symbols
        ``(P, *space[:-1], space[-1]//2 + 1)`` for periodic data (the circular convolution, by FFT), else the
        filters ``(P, size, ..., size)``.

        Computing it once per rollout instead of once per right-hand side saves most of the filter cost.
        """
        k = self.kernels()
        if self.bc != "periodic" or not self.orders:
            return k
        if self.size > min(space):
            raise PdeconvError(f"the {'×'.join(map(str, space))} grid is smaller than the {self.size}-point filters")
        r = self.size // 2
        index = []  # K[p, q] acts as the circular kernel at (−p, −q)
        for axis, n in enumerate(space):
            shape = [1] * len(space)
            shape[axis] = self.size
            index.append(torch.arange(-r, r + 1).neg().remainder(n).view(shape))
        full = k.new_zeros(k.shape[0], *space)
        full[(slice(None), *index)] = k
        return torch.fft.rfftn(full, dim=_space(full, self.dims))

    def forward(self, u: Tensor, operator: Tensor | None = None) -> Tensor:
        n, c, *space = u.shape
        if not self.orders:
            return u.new_zeros(n, c, 0, *space)
        op = (self.operator(*space) if operator is None else operator).to(device=u.device)
        axes = _space(u, self.dims)
        if self.bc == "periodic":
            return torch.fft.irfftn(torch.fft.rfftn(u, dim=axes).unsqueeze(2) * op, s=space,
                                    dim=tuple(a + 1 for a in axes))
        r = self.size // 2
        conv = (F.conv1d, F.conv2d, F.conv3d)[self.dims - 1]
        out = conv(pad(u.reshape(n * c, 1, *space), r, self.bc, dims=self.dims), op.to(u.dtype).unsqueeze(1))
        return out.view(n, c, len(self.orders), *space)


def coefficient_basis(*space: int, degree: int | None, bc: str) -> Tensor:
    """An orthonormal basis ``(M, *space)`` of coefficient fields: mean over the grid of ``Φ_m Φ_n`` is ``δ_mn``.

    ``space`` is the grid, e.g. ``H, W`` (or ``W``, or ``D, H, W``). ``degree=None``: the constant 1 (M = 1).
    Periodic data: the products of ``1, cos(k t), sin(k t)`` along every axis with ``k ≤ degree``
    (``t = 2π i / n`` on an axis of n points; M = (2·degree + 1)^dims). Other boundaries: the monomials of total
    degree ≤ ``degree`` in coordinates on ``[−1, 1]`` (pixel centres; in 2-D :func:`pdeconv.layers.varcoef.monomials`),
    orthonormalised on the grid.
    """
    if degree is None:
        return torch.ones(1, *space, dtype=torch.float64)
    if degree < 0:
        raise PdeconvError(f"degree must be ≥ 0; got {degree}")
    dims = len(space)
    if bc == "periodic":
        if 2 * degree + 1 > min(space):
            raise PdeconvError(f"a {'×'.join(map(str, space))} grid resolves Fourier coefficient fields up to degree "
                             f"{(min(space) - 1) // 2}")

        def waves(n: int) -> list[Tensor]:
            t = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n
            out = [torch.ones_like(t)]
            for k in range(1, degree + 1):
                out += [math.sqrt(2) * torch.cos(k * t), math.sqrt(2) * torch.sin(k * t)]
            return out

        per_axis = [waves(n) for n in space]
        fields = []
        for combo in itertools.product(*per_axis):  # the first axis varies slowest
            f = combo[0].view(-1, *(1,) * (dims - 1))
            for axis, g in enumerate(combo[1:], start=1):
                f = f * g.view([n if i == axis else 1 for i, n in enumerate(space)])
            fields.append(f.expand(*space))
        return torch.stack(fields)
    if dims == 2:
        raw = monomials(*space, degree, dtype=torch.float64)[0]
    else:
        axes = [(2 * torch.arange(n, dtype=torch.float64) + 1) / n - 1 for n in space]
        raw = torch.stack([
            math.prod(axes[i].view([n if j == i else 1 for j, n in enumerate(space)]) ** k for i, k in enumerate(index))
            * torch.ones(space, dtype=torch.float64)
            for index in multi_indices(degree, dims=dims)
        ])
    q, _ = torch.linalg.qr(raw.reshape(raw.shape[0], -1).T)
    return (q.T * math.sqrt(math.prod(space))).reshape(-1, *space)


def _numpy_ffts(space: tuple[int, ...]) -> tuple[Callable, Callable]:
    """``irfftn`` and ``rfftn`` over the space axes of ``(N, C, *space)`` NumPy arrays: SciPy's (a third of
    NumPy's call overhead on a 1024-point axis), its 1-D functions for one axis (half the n-D ones')."""
    import scipy.fft

    axes = tuple(range(2, 2 + len(space)))
    if len(space) == 1:
        return (functools.partial(scipy.fft.irfft, n=space[0], axis=2), functools.partial(scipy.fft.rfft, axis=2))
    return functools.partial(scipy.fft.irfftn, s=space, axes=axes), functools.partial(scipy.fft.rfftn, axes=axes)


class PolynomialPDE(nn.Module):
    """``u_t = F(u)`` for ``C`` fields: one equation per field, a coefficient field per library term.

    Parameters: ``normalised`` ``(C, J, M)`` (``ĉ``, see the module docstring) and the derivative filters'
    free moments; :attr:`coefficients` are the same ``(C, J, M)`` in the data's units (``scale · ĉ · mask``).
    ``mask`` ``(C, J, M)`` switches pruned terms (or the variable part of a field) off.
    ``forward(u)`` gives ``u_t`` for ``u (N, C, *space)``; :meth:`rollout` integrates with RK4 over ``dt`` in
    ``substeps`` steps (PDE-Net's δt-blocks). ``shape`` is the grid (``space``) and ``spacing`` its spacing per
    axis, both in array order (``(H, W)`` and ``(dy, dx)`` in 2-D; ``(W,)``, ``(dx,)`` in 1-D).
    """

    def __init__(
        self,
        terms: list[Term],
        components: tuple[str, ...],
        *,
        shape: tuple[int, ...],
        spacing: tuple[float, ...],
        bc: str,
        kernel_size: int = 7,
        degree: int | None = None,
        learn_moments: bool = True,
    ):
        super().__init__()
        self.terms, self.components = list(terms), tuple(components)
        if len(shape) != len(spacing):
            raise PdeconvError(f"shape {tuple(shape)} and spacing {tuple(spacing)} need one entry per space axis")
        orders = {ab for t in terms for ab in t.derivatives if any(ab)}
        self.orders = sorted(orders, key=lambda ab: (sum(ab), ab))
        self.derivatives = Derivatives(
            self.orders, size=kernel_size, spacing=tuple(spacing), bc=bc, learn_moments=learn_moments
        )
        slot = {ab: i + 1 for i, ab in enumerate(self.orders)}
        slot[(0,) * len(shape)] = 0
        self._factors = [[(c, slot[ab]) for c, ab in t.factors] for t in terms]
        # term j is "diagonal" in equation e when it is a derivative (or the value) of field e alone: linear, and
        # with constant coefficients on a periodic grid a multiplier in Fourier space (the integrating factor)
        diagonal = torch.zeros(len(components), len(terms), dtype=torch.bool)
        for j, factors in enumerate(self._factors):
            if len(factors) == 1:
                diagonal[factors[0][0], j] = True
        self.register_buffer("diagonal", diagonal, persistent=False)
        self.register_buffer("basis", coefficient_basis(*shape, degree=degree, bc=bc))
        C, J, M = len(components), len(terms), self.basis.shape[0]
        self.normalised = nn.Parameter(torch.zeros(C, J, M, dtype=torch.float64))
        self.register_buffer("scale", torch.ones(C, J, dtype=torch.float64))  # c = scale · ĉ
        self.register_buffer("mask", torch.ones(C, J, M, dtype=torch.float64))
        self.spacing, self.bc, self.degree = tuple(spacing), bc, degree
        self.kernel_size, self.shape = kernel_size, tuple(shape)

    def restricted(self) -> PolynomialPDE:
        """A copy holding only the terms active in some equation (cheaper to evaluate), same coefficients."""
        keep = (self.mask > 0).any(-1).any(0).nonzero().flatten().tolist()
        new = PolynomialPDE(
            [self.terms[j] for j in keep], self.components, shape=self.shape, spacing=self.spacing, bc=self.bc,
            kernel_size=self.kernel_size, degree=self.degree,
            learn_moments=self.derivatives.free_moments.requires_grad,
        )
        with torch.no_grad():
            for name in ("normalised", "scale", "mask"):
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
            d = torch.cat([u.unsqueeze(2), self.derivatives(u)], dim=2)  # (N, C, 1 + P, *space)
            size = d.abs().flatten(3).amax(dim=(0, 3))  # (C, 1 + P)
            gain = [1.0]  # a plain field
            if self.orders:
                k = self.derivatives.kernels()
                axes = _space(k, len(self.shape))
                grid = [max(n, k.shape[-1]) for n in self.shape]
                sym = torch.fft.fftn(k, s=grid, dim=axes).abs().flatten(1).amax(dim=1)
                gain += sym.tolist()
            cmax = self.fields().abs().flatten(2).amax(dim=2)  # (C, J)
            if self.integrating_factor:  # the linear diagonal part is integrated exactly: no step limit
                cmax = cmax * ~self.diagonal
            rate = 0.0
            for j, factors in enumerate(self._factors):
                c_j = float(cmax[:, j].max())
                for i, (_, p) in enumerate(factors):
                    others = [float(size[c2, p2]) for i2, (c2, p2) in enumerate(factors) if i2 != i]
                    rate += c_j * float(gain[p]) * math.prod(others)
            return rate

    def stable_substeps(self, u: Tensor, dt: float, minimum: int = 1) -> int:
        """RK4 steps per ``dt`` that keep ``h · rate ≤ 2`` (inside RK4's stability region on both axes); with the
        :attr:`integrating_factor`, ``h · rate ≤ 0.5`` for the rate of the rest only (its error, not its
        stability, then sets the step: the rollout refit would otherwise fit the time-stepping error)."""
        limit = 0.5 if self.integrating_factor else 2.0  # IF-RK4: the stiff part is exact; steps for accuracy
        return max(minimum, math.ceil(dt * self.max_rate(u) / limit))

    @property
    def integrating_factor(self) -> bool:
        """Whether :meth:`step` integrates the linear diagonal terms exactly (periodic data, constant coefficients,
        some such term active): stiff terms like ``u_xxxx`` then cost no sub-steps."""
        return (self.bc == "periodic" and self.basis.shape[0] == 1
                and bool((self.diagonal & (self.mask[..., 0] > 0)).any()))

    def _split(self, prepared: tuple[Tensor, Tensor], numpy: bool = False) -> tuple[Tensor, Callable]:
        """The symbol ``L (C, *spectrum)`` of the linear diagonal part, and the rest of ``F`` as a map from spectra
        to spectra (``rfftn`` over the space axes of ``(N, C, *space)`` fields); ``numpy``: the map takes and
        returns NumPy arrays (no autograd; a fifth of torch's per-operation overhead on these small arrays).

        The rest is evaluated from the spectrum directly: each factor its terms need (a field or one of its
        derivatives) is one inverse FFT of ``ŵ · symbol``, all of them in one batched call, and only the terms
        with a coefficient outside ``L`` are formed — the same ``F − L`` as :meth:`forward` (a real filter's
        symbol is real at the zero and Nyquist frequencies, so no projection onto real fields is skipped), at
        two FFTs per evaluation instead of one per derivative order and three more.
        """
        c, op = prepared
        spectrum = (*self.shape[:-1], self.shape[-1] // 2 + 1)
        ones = torch.ones(1, *spectrum, dtype=torch.complex128, device=c.device)  # a plain field's symbol
        symbols = torch.cat([ones, op.to(ones.dtype)]) if self.orders else ones
        slots = torch.tensor([f[0][1] if len(f) == 1 else 0 for f in self._factors], dtype=torch.long)
        diagonal = self.diagonal.to(c.dtype)
        L = torch.einsum("ej,j...->e...", (c * diagonal).to(symbols.dtype), symbols[slots])
        rest = c * (1 - diagonal)  # (C, J): constant coefficients (an integrating factor needs them)
        terms = [j for j in range(rest.shape[1]) if bool((rest[:, j] != 0).any())]
        needed = sorted({cp for j in terms for cp in self._factors[j]})
        where = {cp: i for i, cp in enumerate(needed)}
        fields = torch.tensor([cp[0] for cp in needed], dtype=torch.long)
        factor_symbols = symbols[torch.tensor([cp[1] for cp in needed], dtype=torch.long)]
        space, axes = self.shape, tuple(range(2, 2 + len(self.shape)))
        # the coefficient of term j in every equation, shaped (1, C, 1, ...) to multiply θ_j (N, 1, *space)
        columns = [rest[:, j].reshape(1, -1, *(1,) * len(space)) for j in terms]
        if numpy:
            fields, factor_symbols = fields.numpy(), factor_symbols.detach().cpu().numpy()
            columns = [c.detach().cpu().numpy() for c in columns]
            irfftn, rfftn = _numpy_ffts(space)
        else:
            irfftn = functools.partial(torch.fft.irfftn, s=space, dim=axes)
            rfftn = functools.partial(torch.fft.rfftn, dim=axes)
        products = [[where[cp] for cp in self._factors[j]] for j in terms]  # each term's factors, as value slots

        def rest_of_f(w):
            values = irfftn(w[:, fields] * factor_symbols) if needed else None  # (N, factors, *space)
            out = 0.0
            for slots, column in zip(products, columns, strict=True):
                if not slots:  # a constant term
                    out = out + column
                    continue
                t = values[:, slots[0]:slots[0] + 1]
                for i in slots[1:]:
                    t = t * values[:, i:i + 1]
                out = out + t * column
            if not any(products):  # no term or only constant ones: broadcast to the fields' shape
                out = out + (np.zeros if numpy else w.real.new_zeros)((w.shape[0], w.shape[1], *space))
            return rfftn(out)

        return L, rest_of_f

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.terms]

    def features(self, u: Tensor, operator: Tensor | None = None) -> Tensor:
        """The library ``θ_j(u)`` on the grid, shape ``(N, J, *space)``."""
        if not self._factors:
            return u.new_zeros(u.shape[0], 0, *u.shape[2:])
        d = torch.cat([u.unsqueeze(2), self.derivatives(u, operator)], dim=2)  # (N, C, 1 + P, *space)
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

    @property
    def coefficients(self) -> Tensor:
        """``c (C, J, M)`` in the data's units: equation e, term j, basis function m (``M = 1``: constants,
        ``coefficients[e, j, 0]`` is the number ``equations()`` prints); zero for pruned terms. A computed tensor:
        assign ``model.coefficients = c`` to set it (changing it in place changes nothing)."""
        return self.normalised * self.mask * self.scale.unsqueeze(-1)

    @coefficients.setter
    def coefficients(self, c: Tensor) -> None:
        with torch.no_grad():
            c = torch.as_tensor(c, dtype=self.normalised.dtype).expand_as(self.normalised)
            self.normalised.copy_(c / self.scale.unsqueeze(-1))

    def fields(self) -> Tensor:
        """Coefficient fields ``c_j(x, y)`` in physical units, ``(C, J, *space)`` (zero for pruned terms)."""
        return torch.einsum("ejm,m...->ej...", self.coefficients.to(self.basis.dtype), self.basis)

    def prepare(self) -> tuple[Tensor, Tensor]:
        """The parameters in the form :meth:`forward` uses: physical coefficients (``(C, J)`` if constant, else
        the fields ``(C, J, *space)``) and the filters' :meth:`Derivatives.operator`. Reused across a rollout."""
        if self.basis.shape[0] == 1:
            c = self.coefficients[..., 0]
        else:
            c = self.fields()
        return c, self.derivatives.operator(*self.shape)

    def forward(self, u: Tensor, prepared: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """``u_t = Σ_j c_j θ_j(u)`` for ``u (N, C, *space)``; ``prepared`` reuses a :meth:`prepare` result."""
        c, op = self.prepare() if prepared is None else prepared
        theta = self.features(u, op)
        if c.dim() == 2:
            return torch.einsum("nj...,ej->ne...", theta, c.to(u.dtype))
        return torch.einsum("nj...,ej...->ne...", theta, c.to(u.dtype))

    def step(self, u: Tensor, dt: float, substeps: int = 1, prepared: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """One time step ``dt`` of classical RK4 in ``substeps`` equal parts; with the :attr:`integrating_factor`,
        of integrating-factor RK4 (:func:`~pdeconv.layers.steppers.integrating_factor_rk4_step`: the linear
        diagonal part exactly in Fourier space, the rest to fourth order)."""
        p = self.prepare() if prepared is None else prepared
        h = dt / substeps
        if self.integrating_factor:
            return self._if_steps(u, h, substeps, p)
        for _ in range(substeps):
            u = runge_kutta_step(lambda v: self(v, p), u, h, RK4)
        return u

    def _if_steps(self, u: Tensor, h: float, substeps: int, prepared: tuple[Tensor, Tensor]) -> Tensor:
        space = tuple(u.shape[2:])
        axes = tuple(range(2, u.dim()))
        if not torch.is_grad_enabled() and u.device.type == "cpu":  # no autograd: the same steps in NumPy
            L, N = self._split(prepared, numpy=True)  # N: the rest of F, in Fourier space
            L = L.detach().cpu().numpy()
            irfftn, rfftn = _numpy_ffts(space)
            with np.errstate(all="ignore"):  # a rollout that blows up gives inf/NaN silently, as torch's does
                E, E2 = np.exp(L * h), np.exp(L * (h / 2))
                v = rfftn(u.numpy())
                for _ in range(substeps):
                    v = integrating_factor_rk4_step(v, N, E, E2, h)
                return torch.from_numpy(irfftn(v)).to(u.dtype)
        L, N = self._split(prepared)
        E, E2 = torch.exp(L * h), torch.exp(L * (h / 2))
        v = torch.fft.rfftn(u, dim=axes)
        for _ in range(substeps):
            v = integrating_factor_rk4_step(v, N, E, E2, h)
        return torch.fft.irfftn(v, s=space, dim=axes)

    def rollout(self, u0: Tensor, steps: int, dt: float, substeps: int = 1) -> Tensor:
        """Frames ``(N, steps + 1, C, *space)`` from ``u0 (N, C, *space)`` at times ``0, dt, ..., steps·dt``."""
        p = self.prepare()
        out = [u0]
        for _ in range(steps):
            out.append(self.step(out[-1], dt, substeps, p))
        return torch.stack(out, dim=1)

    def equations(self) -> dict[str, dict[str, float]]:
        """``{field: {term: coefficient}}`` of the active terms: the constant, or the mean of a variable field."""
        with torch.no_grad():
            f = self.fields().flatten(2).mean(dim=2)
        active = (self.mask > 0).any(-1)
        return {
            e: {n: float(f[i, j]) for j, n in enumerate(self.names) if active[i, j]}
            for i, e in enumerate(self.components)
        }
