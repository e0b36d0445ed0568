"""Symmetric hyperbolic systems as a layer: ``u_t = A·∂x u + B·∂y u + C·u − γ·u`` (Maxwell, Dirac, learned).

A, B (channels × channels) are symmetric and C skew-symmetric by construction, γ ≥ 0. Space: central differences
``Dx = stencil.dx(Δ)``, ``Dy = stencil.dy(Δ)`` (x along columns, y down the rows, grid spacing Δ). Under
``periodic`` or ``dirichlet`` (zero) boundaries ``Dxᵀ = −Dx``, so ``L = A·Dx + B·Dy + C`` is skew-adjoint
and ``d/dt ‖u‖² = −2γ‖u‖²``: the energy is conserved for γ = 0 and decays otherwise. Reflect/replicate
padding break ``Dxᵀ = −Dx``; ``neumann`` and ``replicate`` are refused.

Time: implicit midpoint, ``(u_{n+1} − u_n)/h = (L − γ)(u_n + u_{n+1})/2``: the Cayley map
``u_{n+1} = (I − h/2·(L − γ))⁻¹ (I + h/2·(L − γ)) u_n``, second order, unconditionally stable, and exactly
norm-preserving for γ = 0 (up to rounding). It is solved exactly, not iteratively: ``iD`` is Hermitian, so
``D = −i·U diag(λ) Uᴴ`` per axis (computed once per grid size), and in that basis L is one C×C matrix per
pair of eigenvalues, ``L̂ = −i(λ_x·A + λ_y·B) + C``; ``steps`` steps are a matrix power. Cost per call:
H·W complex C×C solves (memory H·W·C² complex numbers) and two dense transforms, O(N·C·H·W·(H + W)).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from pdeconv import stencil
from pdeconv.boundary import BoundaryConditioned, boundary_condition, convolve
from pdeconv.errors import PdeconvError
from pdeconv.layers._input import batched

__all__ = ["SymmetricHyperbolic2d", "maxwell_te", "dirac"]

_SKEW_BCS = ("periodic", "dirichlet")


def _check_bc(bc: str) -> str:
    bc = boundary_condition(bc)
    if bc not in _SKEW_BCS:
        raise PdeconvError(
            f"SymmetricHyperbolic2d: bc={bc!r} (reflect/replicate padding) breaks the skew-adjointness of "
            "central differences; use 'periodic' or 'dirichlet'"
        )
    return bc


class SymmetricHyperbolic2d(BoundaryConditioned, nn.Module):
    """``steps`` implicit-midpoint steps of size ``h`` of ``u_t = A·∂x u + B·∂y u + C·u − γ·u`` on (N, C, H, W).

    Parameters (buffers when ``learnable=False``): ``P, Q, R`` with ``A = (P + Pᵀ)/2``, ``B = (Q + Qᵀ)/2``,
    ``C = (R − Rᵀ)/2``, initialised N(0, 1/channels); ``log_gamma`` with ``γ = exp(log_gamma)``. With
    ``dissipation=0`` γ is fixed at 0 (the layer stays conservative); a positive value is learnable.
    ``spacing`` is the grid spacing Δ of the central differences (default 1 pixel).
    """

    def __init__(
        self,
        channels: int,
        *,
        steps: int = 1,
        h: float = 1.0,
        bc: str = "periodic",
        dissipation: float = 0.0,
        spacing: float = 1.0,
        learnable: bool = True,
    ) -> None:
        super().__init__()
        bc = _check_bc(bc)
        if channels < 1 or steps < 1:
            raise PdeconvError(f"channels and steps must be ≥ 1; got channels={channels}, steps={steps}")
        if not (h > 0 and spacing > 0 and dissipation >= 0):
            raise PdeconvError(f"need h > 0, spacing > 0, dissipation ≥ 0; got {h}, {spacing}, {dissipation}")
        self.channels, self.steps, self.h, self.bc, self.spacing = channels, steps, float(h), bc, float(spacing)
        for name in ("P", "Q", "R"):
            value = torch.randn(channels, channels) / math.sqrt(channels)
            self._add(name, value, learnable)
        log_gamma = torch.tensor(math.log(dissipation) if dissipation > 0 else -math.inf)
        self._add("log_gamma", log_gamma, learnable and dissipation > 0)

    def set_bc(self, bc: str) -> None:
        """Impose ``bc``: only ``periodic`` and ``dirichlet`` keep the central differences skew-adjoint."""
        self.bc = _check_bc(bc)

    def _add(self, name: str, value: Tensor, learnable: bool) -> None:
        if learnable:
            self.register_parameter(name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    @classmethod
    def from_matrices(
        cls, A: Tensor, B: Tensor, C: Tensor | None = None, *, dtype: torch.dtype | None = None, **kwargs: Any
    ) -> SymmetricHyperbolic2d:
        """A layer with these coefficients (fixed unless ``learnable=True``), in ``dtype`` (default: A's).

        A, B must be symmetric and C skew-symmetric (default 0); other keywords go to the constructor.
        """
        A, B = torch.as_tensor(A), torch.as_tensor(B)
        C = torch.zeros_like(A) if C is None else torch.as_tensor(C)
        c = A.shape[0]
        for name, M, sign in (("A", A, 1), ("B", B, 1), ("C", C, -1)):
            if M.shape != (c, c) or not torch.allclose(M, sign * M.T):
                kind = "symmetric" if sign == 1 else "skew-symmetric"
                got = f"shape {tuple(M.shape)}" if M.shape != (c, c) else "a matrix that is not"
                raise PdeconvError(f"{name} must be a {kind} {c}×{c} matrix; got {got}")
        kwargs.setdefault("learnable", False)
        layer = cls(c, **kwargs).to(dtype or (A.dtype if A.is_floating_point() else torch.get_default_dtype()))
        with torch.no_grad():
            layer.P.copy_(A)
            layer.Q.copy_(B)
            layer.R.copy_(C)
        return layer

    @property
    def A(self) -> Tensor:
        return (self.P + self.P.T) / 2

    @property
    def B(self) -> Tensor:
        return (self.Q + self.Q.T) / 2

    @property
    def C(self) -> Tensor:
        return (self.R - self.R.T) / 2

    @property
    def gamma(self) -> Tensor:
        return self.log_gamma.exp()

    def kernel(self) -> Tensor:
        """The (C, C, 3, 3) conv weight of L = A·Dx + B·Dy + C: output channel i, input channel j."""
        dtype = self.P.dtype  # the stencils in the parameters' precision (float32 ones are off by ~1e-8)
        stencils = (stencil.dx(self.spacing, dtype=dtype), stencil.dy(self.spacing, dtype=dtype),
                    stencil.identity(dtype=dtype))
        return sum(M[..., None, None] * s.to(M) for M, s in zip((self.A, self.B, self.C), stencils))

    def time_derivative(self, u: Tensor) -> Tensor:
        """``u_t = L u − γ u``, by one convolution with :meth:`kernel` under the layer's boundary condition."""
        return convolve(u, self.kernel().to(u.dtype), self.bc) - self.gamma.to(u.dtype) * u

    def energy(self, u: Tensor) -> Tensor:
        """``Δ²·Σ_{c,y,x} u²`` per sample (N,): the Riemann sum of ∫|u|² dx dy; conserved when γ = 0."""
        return u.square().sum(dim=(1, 2, 3)) * self.spacing**2

    def forward(self, u: Tensor) -> Tensor:
        return batched(self, u, self.channels, self._evolve)

    def _evolve(self, u: Tensor) -> Tensor:
        real = torch.float64 if u.dtype == torch.float64 else torch.float32
        cplx = torch.complex128 if real == torch.float64 else torch.complex64
        if torch.compiler.is_compiling():  # the eigenbasis outside the graph (a compile has loaded torch._dynamo)
            from pdeconv.layers._grid_eigen import eigen_outside_graph as eigen
        else:  # eagerly (and for torch.jit.trace: constants) without importing torch._dynamo (2 s)
            from pdeconv.layers._grid_eigen import eigen
        lam_y, Uy = (t.to(u.device) for t in eigen(u.shape[2], self.bc, self.spacing))
        lam_x, Ux = (t.to(u.device) for t in eigen(u.shape[3], self.bc, self.spacing))
        Uy, Ux = Uy.to(cplx), Ux.to(cplx)
        A, B, C = (M.to(real) for M in (self.A, self.B, self.C))
        lam_y, lam_x = lam_y.to(real)[:, None, None, None], lam_x.to(real)[None, :, None, None]
        L = -1j * (lam_x * A + lam_y * B) + C  # (H, W, C, C)
        a, gamma = self.h / 2, self.gamma.to(real)
        eye = torch.eye(self.channels, dtype=cplx, device=u.device)
        G = torch.linalg.solve((1 + a * gamma) * eye - a * L, (1 - a * gamma) * eye + a * L)
        G = torch.linalg.matrix_power(G, self.steps)
        uh = Uy.mH @ u.to(cplx) @ Ux.conj()  # D_y acts on rows (left), D_x on columns (right: u·D_xᵀ)
        uh = torch.einsum("yxij,njyx->niyx", G, uh)
        return (Uy @ uh @ Ux.T).real.to(u.dtype)

    def extra_repr(self) -> str:
        return f"{self.channels}, steps={self.steps}, h={self.h:g}, bc={self.bc!r}, spacing={self.spacing:g}"


def maxwell_te(*, dtype: torch.dtype | None = None, **kwargs: Any) -> SymmetricHyperbolic2d:
    """2-D Maxwell, TE mode, ε = μ = 1: u = (E_x, E_y, H_z), fixed coefficients.

    x right along the columns and y down the rows make (x, y, z) right-handed with z pointing *into* the
    image; H_z is the field along that z. Then ∇×H = (∂y H_z, −∂x H_z) and ∂t H_z = −(∇×E)_z give
    ``∂t E_x = ∂y H_z``, ``∂t E_y = −∂x H_z``, ``∂t H_z = ∂y E_x − ∂x E_y``, i.e.
    ``A = [[0, 0, 0], [0, 0, −1], [0, −1, 0]]``, ``B = [[0, 0, 1], [0, 0, 0], [1, 0, 0]]``, ``C = 0``. Speed 1
    along the Poynting vector E × H: E_y = H_z moves right (+x), E_x = −H_z moves down (+y). Energy
    ½∫(|E|² + H_z²) = ½·energy(u). ``dtype`` defaults to torch's default; other keywords go to
    :class:`SymmetricHyperbolic2d` (steps, h, bc, spacing, dissipation).
    """
    A = torch.tensor([[0.0, 0, 0], [0, 0, -1], [0, -1, 0]], dtype=torch.float64)
    B = torch.tensor([[0.0, 0, 1], [0, 0, 0], [1, 0, 0]], dtype=torch.float64)
    return SymmetricHyperbolic2d.from_matrices(A, B, dtype=dtype or torch.get_default_dtype(), **kwargs)


def dirac(*, mass: float = 0.0, dtype: torch.dtype | None = None, **kwargs: Any) -> SymmetricHyperbolic2d:
    """2-D Dirac equation ``i∂t ψ = (−iσ_x ∂x − iσ_y ∂y + m σ_z) ψ`` (ħ = c = 1) as a real system, fixed.

    ψ = p + i·q ∈ ℂ², u = (Re ψ₁, Re ψ₂, Im ψ₁, Im ψ₂) = (p, q). With σ_y = i·J, J = [[0, −1], [1, 0]]:
    ``∂t p = −σ_x ∂x p + J ∂y q + m σ_z q``, ``∂t q = −σ_x ∂x q − J ∂y p − m σ_z p``, so
    ``A = [[−σ_x, 0], [0, −σ_x]]``, ``B = [[0, J], [−J, 0]]`` (symmetric, as Jᵀ = −J) and the mass term
    ``C = [[0, m σ_z], [−m σ_z, 0]]`` (skew). A² = B² = I, AB + BA = AC + CA = BC + CB = 0, C² = −m²I:
    every component solves Klein–Gordon u_tt = Δu − m²u; |ψ|² = ‖u‖². The equation is written in the array's
    (x, y) with y down the rows, the mirror image of the usual picture (mirroring maps σ_y to −σ_y).
    ``dtype`` defaults to torch's default; other keywords go to :class:`SymmetricHyperbolic2d`.
    """
    sx, sz, J, Z = (torch.tensor(m, dtype=torch.float64) for m in
                    ([[0, 1], [1, 0]], [[1, 0], [0, -1]], [[0, -1], [1, 0]], [[0, 0], [0, 0]]))
    A = torch.cat([torch.cat([-sx, Z], 1), torch.cat([Z, -sx], 1)])
    B = torch.cat([torch.cat([Z, J], 1), torch.cat([-J, Z], 1)])
    C = mass * torch.cat([torch.cat([Z, sz], 1), torch.cat([-sz, Z], 1)])
    return SymmetricHyperbolic2d.from_matrices(A, B, C, dtype=dtype or torch.get_default_dtype(), **kwargs)
