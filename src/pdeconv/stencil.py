"""Kernels ↔ differential operators: the dictionary behind "a 3×3 conv is a differential operator".

Conventions (tested in ``tests/test_stencil.py``):

* Tensors are ``(..., H, W)``. ``y`` is the row axis (pointing down), ``x`` the column axis (pointing
  right). ``h`` is the grid spacing, the same along both axes.
* PyTorch's ``conv2d`` is a cross-correlation. For a kernel ``K`` of odd size ``k = 2r + 1``, indexed by
  offsets ``p`` (rows) and ``q`` (columns) in ``-r..r``::

      (K ⋆ u)[y, x] = Σ_{p,q} K[p, q] · u[y + p, x + q]

* Moments: Taylor-expanding ``u(y + p·h, x + q·h)`` gives ``K ⋆ u = Σ_{a,b} M[a, b] · ∂_y^a ∂_x^b u`` with::

      M[a, b] = Σ_{p,q} K[p, q] · p^a · q^b · h^(a+b) / (a! · b!)

  so ``M[a, b]`` is the coefficient of ``∂_y^a ∂_x^b``. The map is ``M = V K Vᵀ`` with the scaled
  Vandermonde matrix ``V[a, p] = (p·h)^a / a!``, applied axis by axis; it is invertible, so every k×k
  kernel *is* a differential operator with k² coefficients (up to order k−1 along each axis).

Example: the essay's Sobel kernel ``[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]`` is ``8·∂x + 2·∂x∂y²``; the binomial
Gaussian ``[[1, 2, 1], [2, 4, 2], [1, 2, 1]] / 16`` is ``1 + ¼·∂x² + ¼·∂y² + (1/16)·∂x²∂y²``.

Multi-indices ``(a, b)`` always mean ``∂_y^a ∂_x^b`` (row order first, like tensor indexing); operators are
listed by total order, and within one order with the x-derivatives first, matching the monomials
1, x, y, x², xy, y² of :class:`pdeconv.layers.VariableCoefficients`.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from pdeconv.errors import PdeconvError

__all__ = [
    "moments",
    "kernel_from_moments",
    "truncate",
    "describe",
    "multi_indices",
    "operator_name",
    "term_name",
    "basis",
    "finite_difference",
    "moment_constraints",
    "operator_matrices",
    "system_moments",
    "identity",
    "dx",
    "dy",
    "dxx",
    "dyy",
    "dxy",
    "laplacian",
    "sobel_x",
    "sobel_y",
    "binomial",
    "gaussian",
    "upwind_x",
    "upwind_y",
]

_SUPERSCRIPTS = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


# --------------------------------------------------------------------------------------------------
# The moment map
# --------------------------------------------------------------------------------------------------


def _check_kernel_shape(t: Tensor, what: str, dims: int = 2) -> int:
    if dims not in (1, 2, 3):
        raise PdeconvError(f"dims must be 1, 2 or 3 (kernels over that many trailing axes); got {dims}")
    if t.dim() < dims:
        shape = ", ".join(["k"] * dims)
        raise PdeconvError(f"{what} must have shape (..., {shape}); got a tensor of shape {tuple(t.shape)}")
    sizes = t.shape[t.dim() - dims:]
    k = sizes[0]
    if any(s != k for s in sizes) or k % 2 == 0:
        raise PdeconvError(
            f"{what} must be square with an odd size k = 2r + 1 (offsets -r..r); got {'×'.join(map(str, sizes))}. "
            "Pad an even kernel with a row and column of zeros to centre it."
        )
    return k


def _along_axes(t: Tensor, mat: Tensor, dims: int) -> Tensor:
    """``t[..., p, ...] ↦ Σ_p mat[a, p] · t[..., p, ...]`` along each of the last ``dims`` axes of ``t``."""
    for axis in range(t.dim() - dims, t.dim()):
        t = torch.movedim(torch.movedim(t, axis, -1) @ mat.transpose(0, 1), -1, axis)
    return t


@lru_cache(maxsize=64)
def _vandermonde64(k: int, h: float) -> tuple[Tensor, Tensor]:
    """``V[a, p] = (p·h)^a / a!`` for p in -r..r, and its inverse, in float64 on the CPU."""
    r = k // 2
    p = torch.arange(-r, r + 1, dtype=torch.float64) * h
    a = torch.arange(k, dtype=torch.float64)
    fact = torch.tensor([math.factorial(i) for i in range(k)], dtype=torch.float64)
    V = p.unsqueeze(0) ** a.unsqueeze(1) / fact.unsqueeze(1)
    V[0, :] = 1.0  # 0**0 = 1, explicitly
    return V, torch.linalg.inv(V)


def _matrices(k: int, h: float, like: Tensor, inverse: bool) -> Tensor:
    dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
    return _matrices_on(k, float(h), like.device, dtype, inverse)


@lru_cache(maxsize=64)
def _matrices_on(k: int, h: float, device: torch.device, dtype: torch.dtype, inverse: bool) -> Tensor:
    """V or V⁻¹ in ``dtype`` on ``device``, kept: a copy to a GPU in every call would wait for the GPU."""
    V, Vinv = _vandermonde64(k, h)
    return (Vinv if inverse else V).to(device=device, dtype=dtype)


def moments(weight: Tensor, h: float = 1.0, *, dims: int = 2) -> Tensor:
    """Moments ``M[..., a, b]`` (coefficient of ``∂_y^a ∂_x^b``) of kernels ``weight`` of shape ``(..., k, k)``.

    ``M = V K Vᵀ`` with ``V[a, p] = (p·h)^a / a!``; any leading dimensions (a conv weight
    ``(C_out, C_in, k, k)`` included); differentiable; dtype and device preserved. ``dims`` = 1 or 3: kernels
    over the last 1 or 3 axes, ``V`` applied along each (axes in array order: ``(x,)``, ``(z, y, x)``).
    """
    k = _check_kernel_shape(weight, "weight", dims)
    V = _matrices(k, h, weight, inverse=False)
    if dims == 2:
        return V @ weight @ V.transpose(0, 1)
    return _along_axes(weight, V, dims)


def kernel_from_moments(M: Tensor, h: float = 1.0, *, dims: int = 2) -> Tensor:
    """The exact inverse of :func:`moments`: ``K = V⁻¹ M V⁻ᵀ``, same shapes, dtype and device, differentiable."""
    k = _check_kernel_shape(M, "moment tensor", dims)
    Vinv = _matrices(k, h, M, inverse=True)
    if dims == 2:
        return Vinv @ M @ Vinv.transpose(0, 1)
    return _along_axes(M, Vinv, dims)


# --------------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------------


def multi_indices(max_order: int, size: int | None = None, *, dims: int = 2) -> list[tuple[int, ...]]:
    """Multi-indices ``(a, b)`` (``∂_y^a ∂_x^b``) of total order ≤ ``max_order``.

    Ordered by total order, then x-derivatives first: ``(0,0), (0,1), (1,0), (0,2), (1,1), (2,0), ...``.
    With ``size`` given, only those representable on a ``size × size`` kernel (a, b < size). ``dims`` = 1 or 3:
    indices ``(b,)`` (``∂_x^b``) or ``(c, a, b)`` (``∂_z^c ∂_y^a ∂_x^b``), the axes in array order, ordered the
    same way (by total order, then lexicographically).
    """
    if max_order < 0:
        raise PdeconvError(f"max_order must be ≥ 0, got {max_order}")
    if dims not in (1, 2, 3):
        raise PdeconvError(f"dims must be 1, 2 or 3; got {dims}")

    def split(n: int, d: int) -> list[tuple[int, ...]]:  # every d-tuple summing to n, lexicographically
        if d == 1:
            return [(n,)]
        return [(a, *rest) for a in range(n + 1) for rest in split(n - a, d - 1)]

    return [
        index for n in range(max_order + 1) for index in split(n, dims)
        if size is None or max(index) < size
    ]


#: the letters of the axes in array order, for 1-, 2- and 3-D indices (x is always the last axis)
AXES = {1: ("x",), 2: ("y", "x"), 3: ("z", "y", "x")}


def _counts(index: tuple[int, ...]) -> list[tuple[str, int]]:
    """``[(letter, order), ...]`` in name order x, y, z."""
    if len(index) not in AXES:
        raise PdeconvError(f"a multi-index has 1, 2 or 3 entries (axes in array order); got {index!r}")
    return list(zip(reversed(AXES[len(index)]), reversed(index), strict=True))


def operator_name(index: tuple[int, ...]) -> str:
    """Unicode name of ``∂_y^a ∂_x^b``: ``(0, 0) → "1"``, ``(0, 1) → "∂x"``, ``(2, 1) → "∂x∂y²"``.

    1-D ``(b,)`` and 3-D ``(c, a, b)`` indices too: ``(3,) → "∂x³"``, ``(1, 0, 1) → "∂x∂z"``.
    """
    parts = []
    for axis, n in _counts(index):
        if n == 1:
            parts.append(f"∂{axis}")
        elif n > 1:
            parts.append(f"∂{axis}" + str(n).translate(_SUPERSCRIPTS))
    return "".join(parts) or "1"


def term_name(index: tuple[int, ...], field: str = "u") -> str:
    """ASCII name of ``∂_y^a ∂_x^b`` applied to ``field``: ``(0, 0) → "u"``, ``(1, 1) → "u_xy"``.

    1-D and 3-D indices too: ``(4,) → "u_xxxx"``, ``(1, 0, 2) → "u_xxz"`` (letters in the order x, y, z).
    """
    letters = "".join(axis * n for axis, n in _counts(index))
    return f"{field}_{letters}" if letters else field


def _format_coefficient(c: float) -> str:
    if abs(c - round(c)) < 1e-9 * max(1.0, abs(c)):
        return str(int(round(c)))
    return f"{c:.4g}"


def truncate(weight: Tensor, max_order: int, h: float = 1.0) -> Tensor:
    """Kernels ``(..., k, k)`` with every moment of total order ``a + b > max_order`` set to zero: the part of
    each kernel that is a differential operator of order ≤ ``max_order``. Same shape, dtype and device.

    For k×k kernels the highest order is ``2·(k − 1)`` (4 for 3×3), where truncation changes nothing.
    """
    if max_order < 0:
        raise PdeconvError(f"max_order must be ≥ 0; got {max_order}")
    M = moments(weight.to(torch.float64), h)
    k = M.shape[-1]
    order = torch.arange(k, device=M.device)
    keep = (order[:, None] + order[None, :] <= max_order).to(M.dtype)
    return kernel_from_moments(M * keep, h).to(weight.dtype)


def _describe_one(M: Tensor, tol: float) -> str:
    k = M.shape[-1]
    terms = []
    for a, b in multi_indices(2 * (k - 1), size=k):
        c = float(M[a, b])
        if abs(c) <= tol:
            continue
        name = operator_name((a, b))
        mag = _format_coefficient(abs(c))
        if name == "1":
            body = mag
        elif mag == "1":
            body = name
        else:
            body = f"{mag}·{name}"
        terms.append(("-" if c < 0 else "+", body))
    if not terms:
        return "0"
    sign, body = terms[0]
    out = ("-" if sign == "-" else "") + body
    for sign, body in terms[1:]:
        out += f" {sign} {body}"
    return out


def describe(weight, h: float = 1.0, tol: float = 1e-6, max_kernels: int = 16) -> str:
    """A readable operator, e.g. ``"8·∂x + 2·∂x∂y²"``, terms ordered by total order (x before y).

    ``weight`` is a tensor or anything ``torch.as_tensor`` takes (a NumPy array, nested lists) of shape
    (..., k, k), k odd. ``tol`` is relative to the largest moment magnitude. A weight with leading dimensions
    is described kernel by kernel (``[out, in]: ...``) when it holds at most ``max_kernels`` kernels, otherwise
    as a summary of the mean absolute coefficient of each operator over all kernels.
    """
    try:
        weight = torch.as_tensor(weight).detach()
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"describe() takes a k×k kernel as a tensor or array-like; got {type(weight).__name__}") \
            from None
    if weight.dim() < 2 or weight.shape[-1] != weight.shape[-2] or weight.shape[-1] % 2 == 0:
        raise PdeconvError(f"describe() takes (..., k, k) kernels with k odd; got shape {tuple(weight.shape)}")
    M = moments(weight.to(torch.float64), h)
    scale = float(M.abs().max()) if M.numel() else 0.0
    atol = tol * scale
    if weight.dim() == 2:
        return _describe_one(M, atol)
    flat = M.reshape(-1, *M.shape[-2:])
    lead = weight.shape[:-2]
    if flat.shape[0] <= max_kernels:
        lines = []
        for i, Mi in enumerate(flat):
            idx = ", ".join(str(int(j)) for j in torch.unravel_index(torch.tensor(i), lead))
            lines.append(f"[{idx}]: {_describe_one(Mi, atol)}")
        return "\n".join(lines)
    mean = flat.abs().mean(0)
    k = M.shape[-1]
    parts = [
        f"{operator_name(ab)}: {float(mean[ab]):.3g}"
        for ab in multi_indices(2 * (k - 1), size=k)
        if float(mean[ab]) > atol
    ]
    return f"{flat.shape[0]} kernels {tuple(lead)}; mean |coefficient| " + (", ".join(parts) or "0")


# --------------------------------------------------------------------------------------------------
# Bases and finite differences
# --------------------------------------------------------------------------------------------------


def _dtype(dtype: torch.dtype | None) -> torch.dtype:
    return dtype if dtype is not None else torch.get_default_dtype()


def basis(max_order: int, size: int = 3, h: float = 1.0, dtype: torch.dtype | None = None) -> Tensor:
    """Kernels ``(n, size, size)`` spanning the operators of total order ≤ ``max_order``.

    Kernel ``i`` has moment 1 at ``multi_indices(max_order, size)[i]`` and every other moment 0, so a kernel
    lies in their span exactly when its moments of total order > ``max_order`` vanish. For order 2 on 3×3:
    6 kernels (1, ∂x, ∂y, ∂x², ∂x∂y, ∂y²).
    """
    idx = multi_indices(max_order, size=size)
    M = torch.zeros(len(idx), size, size, dtype=torch.float64)
    for i, (a, b) in enumerate(idx):
        M[i, a, b] = 1.0
    return kernel_from_moments(M, h).to(_dtype(dtype))


def _cube(size: int, dims: int) -> str:
    return "×".join([str(size)] * dims)


def moment_constraints(
    order: tuple[int, ...], size: int, accuracy: int = 2
) -> tuple[Tensor, Tensor]:
    """PDE-Net's moment constraint for ``∂_y^a ∂_x^b`` on a ``size × size`` kernel.

    Returns ``(values, mask)`` of shape ``(size, size)``: where ``mask`` is true the moment is fixed to
    ``values`` (1 at ``order``, 0 for every other moment of total order < a + b + accuracy); the others are
    free (learnable in PDE discovery). Raises if a kernel of this size cannot meet the constraint with its
    free moments at zero (moments beyond the kernel's size are then fixed by symmetry, or not at all).
    A 1-D ``order = (b,)`` or 3-D ``(c, a, b)`` gives ``(size,)`` or ``(size, size, size)`` tensors.
    """
    order = tuple(int(v) for v in order)
    dims = len(order)
    if dims not in AXES or min(order) < 0 or accuracy < 1:
        raise PdeconvError(f"need order (a, b) ≥ 0 and accuracy ≥ 1; got order={order}, accuracy={accuracy}")
    if size % 2 == 0 or max(order) >= size:
        need = max(order) + 1 + max(order) % 2
        raise PdeconvError(
            f"a {_cube(size, dims)} kernel cannot hold {operator_name(order)}; use an odd size ≥ {need}"
        )
    n = sum(order) + accuracy
    mask = _total_order(size, dims) < n
    values = torch.zeros((size,) * dims, dtype=torch.float64)
    values[order] = 1.0
    if not _meets_constraint(kernel_from_moments(values, dims=dims), order, n):
        raise PdeconvError(
            f"a {_cube(size, dims)} kernel cannot approximate {operator_name(order)} to accuracy {accuracy}; "
            f"use size ≥ {_min_size(order, accuracy)}"
        )
    return values, mask


def _total_order(size: int, dims: int) -> Tensor:
    """``(size,) * dims`` tensor: the total order ``a + b + ...`` of each moment index."""
    idx = torch.arange(size)
    total = torch.zeros((size,) * dims, dtype=torch.long)
    for axis in range(dims):
        total = total + idx.view([size if i == axis else 1 for i in range(dims)])
    return total


def _meets_constraint(kernel: Tensor, order: tuple[int, ...], n: int) -> bool:
    """Whether all moments of total order < n (beyond the kernel's size too) vanish except ``order`` (= 1)."""
    k, dims = kernel.shape[-1], len(order)
    p = torch.arange(-(k // 2), k // 2 + 1, dtype=torch.float64)
    c = torch.arange(n, dtype=torch.float64)
    fact = torch.tensor([math.factorial(i) for i in range(n)], dtype=torch.float64)
    W = p.unsqueeze(0) ** c.unsqueeze(1) / fact.unsqueeze(1)
    W[0, :] = 1.0
    M = W @ kernel @ W.T if dims == 2 else _along_axes(kernel, W, dims)
    target = torch.zeros((n,) * dims, dtype=torch.float64)
    target[order] = 1.0
    low = _total_order(n, dims) < n
    return bool(torch.allclose(M[low], target[low], atol=1e-9))


def _min_size(order: tuple[int, ...], accuracy: int) -> int:
    size = max(order) + 1
    size += 1 - size % 2
    while True:
        values = torch.zeros((size,) * len(order), dtype=torch.float64)
        values[tuple(order)] = 1.0
        if _meets_constraint(kernel_from_moments(values, dims=len(order)), order, sum(order) + accuracy):
            return size
        size += 2


def finite_difference(
    order: tuple[int, ...],
    size: int | None = None,
    accuracy: int = 2,
    h: float = 1.0,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """A ``size × size`` stencil for ``∂_y^a ∂_x^b`` (``order = (a, b)``) with error ``O(h^accuracy)`` or better.

    Moment ``(a, b)`` is 1 and all other moments of total order < a + b + accuracy are 0 (PDE-Net's moment
    constraint); the free higher moments are set to 0, which makes the stencil the tensor product of the
    1-D central differences on ``size`` points. ``size`` defaults to the smallest odd size that can satisfy
    the constraint. A 1-D ``order = (b,)`` gives a ``(size,)`` stencil, a 3-D ``(c, a, b)`` a cube.
    """
    if size is None:
        size = _min_size(order, accuracy)
    values, _ = moment_constraints(order, size, accuracy)
    return kernel_from_moments(values, h, dims=len(order)).to(_dtype(dtype))


def system_moments(conv_weight: Tensor, groups: int = 1, h: float = 1.0) -> Tensor:
    """Moments of a convolution as one system: ``M[o, i, a, b]`` = coefficient of ``∂_y^a ∂_x^b`` from input
    channel ``i`` to output channel ``o`` (axes: a along rows/y, b along columns/x; spacing ``h``).

    ``conv_weight`` is ``(..., C_out, C_in/groups, k, k)``; grouped convolutions are expanded block-diagonally
    to ``(..., C_out, C_in, k, k)`` (zeros between groups). Differentiable; for ``groups == 1`` this is
    :func:`moments`.
    """
    if conv_weight.dim() < 4:
        raise PdeconvError(f"conv_weight must be (C_out, C_in/groups, k, k); got shape {tuple(conv_weight.shape)}")
    c_out, c_in_g, k, _ = conv_weight.shape[-4:]
    if c_out % groups:
        raise PdeconvError(f"C_out = {c_out} is not divisible by groups = {groups}")
    M = moments(conv_weight, h)
    if groups == 1:
        return M
    out_g = c_out // groups
    full = M.new_zeros(*M.shape[:-3], c_in_g * groups, k, k)
    for g in range(groups):
        rows = slice(g * out_g, (g + 1) * out_g)
        full[..., rows, g * c_in_g:(g + 1) * c_in_g, :, :] = M[..., rows, :, :, :]
    return full


def operator_matrices(conv_weight: Tensor, groups: int = 1, h: float = 1.0) -> dict[tuple[int, int], Tensor]:
    """The essay's "matrix of differential operators" of a convolution.

    For ``conv_weight`` of shape ``(C_out, C_in/groups, k, k)``, returns ``{(a, b): A_ab}`` with ``A_ab`` of
    shape ``(C_out, C_in)`` such that the convolution is ``Σ_{a,b} A_ab ∂_y^a ∂_x^b`` (a system of PDE
    operators). Grouped convolutions are expanded block-diagonally (zeros between groups). Differentiable.
    """
    if conv_weight.dim() != 4:
        raise PdeconvError(f"conv_weight must be (C_out, C_in/groups, k, k); got shape {tuple(conv_weight.shape)}")
    M = system_moments(conv_weight, groups, h)
    k = M.shape[-1]
    return {(a, b): M[:, :, a, b] for a in range(k) for b in range(k)}


# --------------------------------------------------------------------------------------------------
# Named stencils. Each returns a (size, size) tensor; ``size`` > natural size pads with zeros.
# --------------------------------------------------------------------------------------------------


def _embed(kernel: Tensor, size: int | None, dtype: torch.dtype | None) -> Tensor:
    k = kernel.shape[-1]
    size = k if size is None else size
    if size < k or size % 2 == 0:
        raise PdeconvError(f"size must be odd and ≥ {k} for this stencil; got {size}")
    out = torch.zeros(size, size, dtype=torch.float64)
    o = (size - k) // 2
    out[o:o + k, o:o + k] = kernel
    return out.to(_dtype(dtype))


def _t(rows) -> Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def identity(size: int = 3, dtype: torch.dtype | None = None) -> Tensor:
    """The identity operator 1 (a centred delta)."""
    return _embed(_t([[1.0]]), size, dtype)


def dx(h: float = 1.0, size: int = 3, dtype: torch.dtype | None = None) -> Tensor:
    """Central difference ``∂x ≈ (u[x+1] − u[x−1]) / 2h`` (second order)."""
    return _embed(_t([[0, 0, 0], [-0.5, 0, 0.5], [0, 0, 0]]) / h, size, dtype)


def dy(h: float = 1.0, size: int = 3, dtype: torch.dtype | None = None) -> Tensor:
    """Central difference ``∂y ≈ (u[y+1] − u[y−1]) / 2h``, y pointing down the rows (second order)."""
    return _embed(_t([[0, -0.5, 0], [0, 0, 0], [0, 0.5, 0]]) / h, size, dtype)


def dxx(h: float = 1.0, size: int = 3, dtype: torch.dtype | None = None) -> Tensor:
    """``∂x² ≈ (u[x+1] − 2u + u[x−1]) / h²``."""
    return _embed(_t([[0, 0, 0], [1, -2, 1], [0, 0, 0]]) / h**2, size, dtype)


def dyy(h: float = 1.0, size: int = 3, dtype: torch.dtype | None = None) -> Tensor:
    """``∂y² ≈ (u[y+1] − 2u + u[y−1]) / h²``."""
    return _embed(_t([[0, 1, 0], [0, -2, 0], [0, 1, 0]]) / h**2, size, dtype)


def dxy(h: float = 1.0, size: int = 3, dtype: torch.dtype | None = None) -> Tensor:
    """``∂x∂y`` by central differences: ``K[p, q] = p·q / 4h²``."""
    return _embed(_t([[0.25, 0, -0.25], [0, 0, 0], [-0.25, 0, 0.25]]) / h**2, size, dtype)


def laplacian(points: int = 5, h: float = 1.0, size: int = 3, dtype: torch.dtype | None = None) -> Tensor:
    """``∂x² + ∂y²``: the 5-point stencil, or the isotropic 9-point one (``[[1,4,1],[4,−20,4],[1,4,1]]/6h²``)."""
    if points == 5:
        k = _t([[0, 1, 0], [1, -4, 1], [0, 1, 0]])
    elif points == 9:
        k = _t([[1, 4, 1], [4, -20, 4], [1, 4, 1]]) / 6
    else:
        raise PdeconvError(f"laplacian points must be 5 or 9; got {points}")
    return _embed(k / h**2, size, dtype)


def sobel_x(size: int = 3, dtype: torch.dtype | None = None) -> Tensor:
    """The essay's Sobel kernel ``[[-1,0,1],[-2,0,2],[-1,0,1]] = 8·∂x + 2·∂x∂y²`` (h = 1)."""
    return _embed(_t([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]), size, dtype)


def sobel_y(size: int = 3, dtype: torch.dtype | None = None) -> Tensor:
    """Sobel along the rows: the transpose of :func:`sobel_x`, ``8·∂y + 2·∂x²∂y`` (h = 1)."""
    return _embed(_t([[-1, -2, -1], [0, 0, 0], [1, 2, 1]]), size, dtype)


def binomial(size: int = 3, dtype: torch.dtype | None = None) -> Tensor:
    """The 1-D binomial smoothing filter ``C(size − 1, i) / 2^(size − 1)`` (sum 1); 3 points: ``1 + ½∂x²``."""
    if size < 1 or size % 2 == 0:
        raise PdeconvError(f"binomial and gaussian sizes must be odd and ≥ 1; got {size}")
    row = torch.tensor([math.comb(size - 1, i) for i in range(size)], dtype=torch.float64)
    return (row / row.sum()).to(_dtype(dtype))


def gaussian(size: int = 3, dtype: torch.dtype | None = None) -> Tensor:
    """Binomial smoothing kernel (outer product of :func:`binomial` rows, sum 1). 3×3:
    ``1 + ¼∂x² + ¼∂y² + (1/16)∂x²∂y²``."""
    row = binomial(size, torch.float64)
    return torch.outer(row, row).to(_dtype(dtype))


def _upwind(side: str, h: float) -> Tensor:
    if side == "forward":
        return _t([0, -1, 1]) / h
    if side == "backward":
        return _t([-1, 1, 0]) / h
    raise PdeconvError(f"side must be 'forward' or 'backward'; got {side!r}")


def upwind_x(side: str = "forward", h: float = 1.0, size: int = 3, dtype: torch.dtype | None = None) -> Tensor:
    """One-sided ``∂x``: ``forward`` = ``(u[x+1] − u)/h``, ``backward`` = ``(u − u[x−1])/h`` (first order).

    For ``u_t = c·u_x`` (a shift towards −x when c > 0) the upwind choice is ``forward`` for c > 0.
    """
    k = torch.zeros(3, 3, dtype=torch.float64)
    k[1] = _upwind(side, h)
    return _embed(k, size, dtype)


def upwind_y(side: str = "forward", h: float = 1.0, size: int = 3, dtype: torch.dtype | None = None) -> Tensor:
    """One-sided ``∂y`` (rows, pointing down): ``forward`` = ``(u[y+1] − u)/h``, ``backward`` = ``(u − u[y−1])/h``."""
    k = torch.zeros(3, 3, dtype=torch.float64)
    k[:, 1] = _upwind(side, h)
    return _embed(k, size, dtype)
