"""The solution-data format of ``pdeconv discover``: one ``.npz`` file, read and checked.

Arrays in the file:

* ``u``: float array ``(T, *space)`` (one trajectory), ``(N, T, *space)`` (N trajectories) or, for a system of C
  fields, ``(N, T, C, *space)`` with ``components`` naming them (e.g. ``["u", "v"]``; default u, v, w);
* ``space_dims``: optional, 1, 2 or 3 (default 1 for a 2-D ``u``, else 2): the number of space axes, ``space`` =
  ``(W,)``, ``(H, W)`` or ``(D, H, W)``;
* ``dt``: time between frames; ``dx``: grid spacing along x, the last axis (columns); ``dy``: spacing along y,
  the axis before it (rows, pointing down), defaults to ``dx``; ``dz``: along z, the first space axis of 3-D data,
  defaults to ``dy``; ``bc``: boundary condition, default ``"periodic"``.

Or the axes named (any order, as :meth:`Dataset.from_array`): ``axes``, a string of u's axis letters (``"xt"``:
rows are x, columns time, as PDE-FIND's ``usol``; ``"ntyx"``), and/or coordinate vectors ``t``, ``x``, ``y``,
``z`` in place of ``dt``, ``dx``, ``dy``, ``dz``. A file with ``axes`` or ``t``/``x`` arrays is read that way.

Frame ``u[n, t, c, i, j]`` samples field c of trajectory n at time ``t·dt`` and position ``(x, y) = (j·dx, i·dy)``
(1-D: ``u[n, t, c, j]`` at ``x = j·dx``; 3-D: ``u[n, t, c, k, i, j]`` at ``(x, y, z) = (j·dx, i·dy, k·dz)``).
Files are read with ``allow_pickle=False``: an ``.npz`` never runs code. MATLAB ``.mat`` and HDF5 files are read
by :mod:`pdeconv.discover.formats` with the arrays named by the user.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pdeconv.discover.axes import arrange
from pdeconv.errors import PdeconvError

__all__ = ["BOUNDARY_CONDITIONS", "DEFAULT_COMPONENTS", "MIN_FRAMES", "SPACE_DIMS", "Dataset"]

#: fewest frames per trajectory a fit can use (a time derivative needs two steps)
MIN_FRAMES = 3
#: the spatial dimensions discovery handles
SPACE_DIMS = (1, 2, 3)
DEFAULT_COMPONENTS = ("u", "v", "w")
#: the boundary conditions data may state (:data:`pdeconv.boundary.BOUNDARY_CONDITIONS`, named here so that reading
#: and checking data need not import torch; a test keeps the two equal)
BOUNDARY_CONDITIONS = ("dirichlet", "neumann", "periodic", "replicate")


@dataclass
class Dataset:
    """Solution data ``u`` of shape ``(N, T, C, *space)`` (float64), ``space`` = ``(W,)``, ``(H, W)`` or
    ``(D, H, W)``, on a grid with spacings ``dx`` (x, the last axis), ``dy`` (y, rows; default ``dx``) and ``dz``
    (z, 3-D only; default ``dy``). 1-D data have no ``dy`` (``None``). ``note``: how the axis order was decided,
    when it was decided from the data (:func:`pdeconv.discover.axes.arrange`), else empty.

    Arrays stored in another layout (``(x, t)``, one trajectory, no field axis): :meth:`from_array`."""

    u: np.ndarray
    dt: float
    dx: float
    dy: float | None = None
    bc: str = "periodic"
    components: tuple[str, ...] = ("u",)
    dz: float | None = None
    note: str = ""

    @classmethod
    def from_array(
        cls,
        u,
        *,
        t,
        x,
        y=None,
        z=None,
        axes: str | None = None,
        bc: str = "periodic",
        components: tuple[str, ...] | None = None,
    ) -> Dataset:
        """A Dataset from ``u`` in the layout it is stored in, each axis named.

        ``t``, ``x`` (and ``y``, ``z`` for 2-D, 3-D data): a uniform coordinate vector (its step is the spacing; a
        decreasing one flips its axis) or a single number, the spacing itself. ``axes``: u's axes in order, letters
        of ``t`` (time), ``x``, ``y``, ``z`` (space), ``n`` (trajectories), ``c`` (fields): ``"tx"`` for
        ``u[i, j] = u(t_i, x_j)``, ``"xt"`` for ``u[i, j] = u(x_i, t_j)`` (PDE-FIND's ``usol``), ``"tyx"``,
        ``"ntcyx"``. Without ``axes`` the order is the only one the coordinates' lengths fit; when several fit
        (square arrays, single-number coordinates) the one whose quick linear fit explains u_t (kept in
        :attr:`note`), else ``ValueError`` listing them. ``components``: names of the fields (a ``c`` axis).
        Examples: ``Dataset.from_array(u, t=dt, x=dx, axes="tx")`` for ``u (T, W)``;
        ``Dataset.from_array(usol, t=t, x=x)`` for ``usol (W, T)`` with coordinate vectors ``t (T,)``, ``x (W,)``.
        """
        u = np.asarray(u)
        if not (np.issubdtype(u.dtype, np.floating) or np.issubdtype(u.dtype, np.integer)):
            raise PdeconvError(f"u must be a real float array; got dtype {u.dtype} (complex data: pass u.real or "
                             "np.abs(u))")
        coordinates = {role: v for role, v in (("t", t), ("x", x), ("y", y), ("z", z)) if v is not None}
        fields = None if components is None else len(components)
        u, spacing, _, note = arrange(u, coordinates, axes=axes, fields=fields, how="axes='ORDER'")
        c = u.shape[2]
        if components is None:
            if c > len(DEFAULT_COMPONENTS):
                raise PdeconvError(f"u has C = {c} fields; name them with components=(...) of {c} names")
            components = DEFAULT_COMPONENTS[:c]
        return cls(np.ascontiguousarray(u, dtype=np.float64), bc=bc, components=tuple(components), note=note,
                   **spacing)

    def __post_init__(self) -> None:
        d = self.u.ndim - 3 if isinstance(self.u, np.ndarray) else 0
        if d >= 2 and self.dy is None:
            self.dy = self.dx
        if d == 3 and self.dz is None:
            self.dz = self.dy
        if d == 1:
            self.dy = None
        if d != 3:
            self.dz = None
        _validate(self)

    @property
    def space_dims(self) -> int:
        return self.u.ndim - 3

    @property
    def space(self) -> tuple[int, ...]:
        """Grid points per space axis, in array order."""
        return tuple(self.u.shape[3:])

    @property
    def spacing(self) -> tuple[float, ...]:
        """Grid spacing per space axis, in array order: ``(dx,)``, ``(dy, dx)`` or ``(dz, dy, dx)``."""
        return ((self.dx,), (self.dy, self.dx), (self.dz, self.dy, self.dx))[self.space_dims - 1]


def _validate(d: Dataset) -> None:
    u = d.u
    if not 4 <= u.ndim <= 6:
        raise PdeconvError(f"u must have shape (N, T, C, *space) with 1 to 3 space axes inside a Dataset; got "
                           f"{u.shape}")
    n, t, c, *space = u.shape
    if min(n, c, *space) < 1:
        raise PdeconvError(f"u is empty: shape (N, T, C, *space) = {u.shape}")
    if t < MIN_FRAMES:
        raise PdeconvError(f"u has {t} time step(s) per trajectory; a fit needs at least {MIN_FRAMES} frames")
    bad = int(np.size(u) - np.count_nonzero(np.isfinite(u)))
    if bad:
        raise PdeconvError(f"u contains {bad} NaN or infinite value(s); remove or repair those frames")
    for name in ("dt", "dx", "dy", "dz")[: 1 + d.space_dims]:
        v = getattr(d, name)
        if not (np.isfinite(v) and v > 0):
            raise PdeconvError(f"{name} must be a positive number; got {v}")
    if d.bc not in BOUNDARY_CONDITIONS:
        raise PdeconvError(f"unknown boundary condition {d.bc!r}; valid ones: {', '.join(BOUNDARY_CONDITIONS)}")
    if len(d.components) != c:
        raise PdeconvError(f"components names {len(d.components)} field(s) {list(d.components)} but u has C = {c}")
    for name in d.components:
        if not (name.isidentifier() and "_" not in name and name != "1"):
            raise PdeconvError(f"component name {name!r} must be a letter/digit identifier without '_' (e.g. u, v)")
    if len(set(d.components)) != c:
        raise PdeconvError(f"component names must be unique; got {list(d.components)}")


def shapes(space_dims: int) -> str:
    """The accepted shapes of ``u`` for ``space_dims`` space axes, in words."""
    space = ("W", "H, W", "D, H, W")[space_dims - 1]
    return f"(T, {space}), (N, T, {space}) or (N, T, C, {space})"


def as_full_rank(u: np.ndarray, space_dims: int, where: str) -> np.ndarray:
    """``u`` of rank ``1 + d``, ``2 + d`` or ``3 + d`` (d = ``space_dims``) as ``(N, T, C, *space)``."""
    if space_dims not in SPACE_DIMS:
        raise PdeconvError(f"{where}: space_dims must be 1, 2 or 3; got {space_dims}")
    extra = u.ndim - space_dims
    if extra == 1:
        return u[None, :, None]
    if extra == 2:
        return u[:, :, None]
    if extra == 3:
        return u
    hint = "" if space_dims != 2 else ("; for 1-D or 3-D data set space_dims in the file, or name the axes "
                                       "(axes='tx', 'xt', 'tyx', ...)")
    raise PdeconvError(
        f"{where}: 'u' has rank {u.ndim} (shape {u.shape}), which does not fit space_dims = {space_dims}: expected "
        f"{shapes(space_dims)}{hint}"
    )
