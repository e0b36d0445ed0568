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

import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from pdeconv.discover.axes import arrange, check_letters

__all__ = ["Dataset", "load", "save", "BOUNDARY_CONDITIONS", "MIN_FRAMES", "SPACE_DIMS"]

#: fewest frames per trajectory a fit can use (a time derivative needs two steps)
MIN_FRAMES = 3
#: the spatial dimensions discovery handles
SPACE_DIMS = (1, 2, 3)
_DEFAULT_COMPONENTS = ("u", "v", "w")
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
            raise ValueError(f"u must be a real float array; got dtype {u.dtype} (complex data: pass u.real or "
                             "np.abs(u))")
        coordinates = {role: v for role, v in (("t", t), ("x", x), ("y", y), ("z", z)) if v is not None}
        fields = None if components is None else len(components)
        u, spacing, _, note = arrange(u, coordinates, axes=axes, fields=fields, how="axes='ORDER'")
        c = u.shape[2]
        if components is None:
            if c > len(_DEFAULT_COMPONENTS):
                raise ValueError(f"u has C = {c} fields; name them with components=(...) of {c} names")
            components = _DEFAULT_COMPONENTS[:c]
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


def _one_line(what: str) -> str:
    return " ".join(what.split())


def _validate(d: Dataset) -> None:
    u = d.u
    if not 4 <= u.ndim <= 6:
        raise ValueError(f"u must have shape (N, T, C, *space) with 1 to 3 space axes inside a Dataset; got {u.shape}")
    n, t, c, *space = u.shape
    if min(n, c, *space) < 1:
        raise ValueError(f"u is empty: shape (N, T, C, *space) = {u.shape}")
    if t < MIN_FRAMES:
        raise ValueError(f"u has {t} time step(s) per trajectory; a fit needs at least {MIN_FRAMES} frames")
    bad = int(np.size(u) - np.count_nonzero(np.isfinite(u)))
    if bad:
        raise ValueError(f"u contains {bad} NaN or infinite value(s); remove or repair those frames")
    for name in ("dt", "dx", "dy", "dz")[: 1 + d.space_dims]:
        v = getattr(d, name)
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive number; got {v}")
    if d.bc not in BOUNDARY_CONDITIONS:
        raise ValueError(f"unknown boundary condition {d.bc!r}; valid ones: {', '.join(BOUNDARY_CONDITIONS)}")
    if len(d.components) != c:
        raise ValueError(f"components names {len(d.components)} field(s) {list(d.components)} but u has C = {c}")
    for name in d.components:
        if not (name.isidentifier() and "_" not in name and name != "1"):
            raise ValueError(f"component name {name!r} must be a letter/digit identifier without '_' (e.g. u, v)")
    if len(set(d.components)) != c:
        raise ValueError(f"component names must be unique; got {list(d.components)}")


def shapes(space_dims: int) -> str:
    """The accepted shapes of ``u`` for ``space_dims`` space axes, in words."""
    space = ("W", "H, W", "D, H, W")[space_dims - 1]
    return f"(T, {space}), (N, T, {space}) or (N, T, C, {space})"


def as_full_rank(u: np.ndarray, space_dims: int, where: str) -> np.ndarray:
    """``u`` of rank ``1 + d``, ``2 + d`` or ``3 + d`` (d = ``space_dims``) as ``(N, T, C, *space)``."""
    if space_dims not in SPACE_DIMS:
        raise ValueError(f"{where}: space_dims must be 1, 2 or 3; got {space_dims}")
    extra = u.ndim - space_dims
    if extra == 1:
        return u[None, :, None]
    if extra == 2:
        return u[:, :, None]
    if extra == 3:
        return u
    hint = "" if space_dims != 2 else ("; for 1-D or 3-D data set space_dims in the file, or name the axes "
                                       "(axes='tx', 'xt', 'tyx', ...)")
    raise ValueError(
        f"{where}: 'u' has rank {u.ndim} (shape {u.shape}), which does not fit space_dims = {space_dims}: expected "
        f"{shapes(space_dims)}{hint}"
    )


def _scalar(z, key: str, path: str, *, default=None, kind=float):
    if key not in z.files:
        if default is None:
            raise ValueError(f"{path} has no {key!r}; add it (a positive float) to the .npz")
        return default
    a = np.asarray(z[key])
    if a.size != 1:
        raise ValueError(f"{path}: {key!r} must be a single value; got an array of shape {a.shape}")
    a = a.reshape(())
    if kind is float:
        if not np.issubdtype(a.dtype, np.number):
            raise ValueError(f"{path}: {key!r} must be a number; got {a.dtype}")
        return float(a)
    return str(a)


def load(
    path: str | os.PathLike,
    *,
    variables: Mapping[str, str] | None = None,
    axes: str | None = None,
    complex_part: str | None = None,
    bc: str | None = None,
) -> Dataset:
    """Read and check a data file; ``ValueError`` (one line) if it is malformed, ``FileNotFoundError`` if absent.

    An ``.npz`` names its own arrays; MATLAB ``.mat`` and HDF5 files (told by their first bytes) go to
    :func:`pdeconv.discover.formats.read` with ``variables``, ``axes`` and ``complex_part``. ``bc``: the boundary
    condition of data that state none (default periodic); an ``.npz`` whose own ``bc`` differs is refused.
    """
    from pdeconv.discover import formats  # formats builds on this module

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such data file: {path}")
    if formats.kind(path) is not None:
        return formats.read(path, variables or {}, axes=axes, complex_part=complex_part, bc=bc or "periodic")
    if os.path.splitext(path)[1].lower() in (".mat", ".h5", ".hdf5", ".he5"):
        raise ValueError(f"{path} is neither a MATLAB .mat file (v5 to v7.3) nor an HDF5 file; from MATLAB, save "
                         "it with save(FILE, ..., '-v7') or '-v7.3'")
    if variables or complex_part:
        raise ValueError(f"{path} is not a .mat or HDF5 file: --var, --real and --abs (variables, complex_part) "
                         "are for those; an .npz names its own arrays u, t (or dt), x (or dx), and --axes works "
                         "for it too")
    with open(path, "rb") as f:
        head = f.read(6)
    if head[:4] != b"PK\x03\x04" and head != b"\x93NUMPY":
        kind = "a pickle (pdeconv does not load pickles: they can run code)" if head[:1] == b"\x80" else \
            "neither an .npz archive nor an .npy array (nor a .mat or HDF5 file)"
        raise ValueError(f"{path} is {kind}; save solution data with numpy.savez(path, u=..., dt=..., dx=..., "
                         "dy=...) (docs/discover.md)")
    try:
        z = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise ValueError(f"{path} is a damaged .npz archive ({_one_line(str(e))}); write it again") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is a single .npy array, not an .npz archive with 'u', 'dt', 'dx'")
    with z:
        if "u" not in z.files:
            raise ValueError(f"{path} has no array 'u'; expected u of shape {shapes(2)} (space_dims 2, the default)")
        try:
            u = np.asarray(z["u"])
        except ValueError as e:  # object arrays would need pickle
            raise ValueError(f"{path}: 'u' must be a numeric array ({_one_line(str(e))})") from None
        if not (np.issubdtype(u.dtype, np.floating) or np.issubdtype(u.dtype, np.integer)):
            raise ValueError(f"{path}: 'u' must be a float array; got dtype {u.dtype}")
        space_dims = None
        if "space_dims" in z.files:
            v = np.asarray(z["space_dims"])
            if v.size != 1 or not np.issubdtype(v.dtype, np.integer) or int(v.reshape(())) not in SPACE_DIMS:
                raise ValueError(f"{path}: 'space_dims' must be one integer, 1, 2 or 3; got {v!r}")
            space_dims = int(v.reshape(()))
        components = tuple(str(s) for s in np.atleast_1d(z["components"])) if "components" in z.files else None
        own_bc = _scalar(z, "bc", path, default="", kind=str)
        own_axes = _scalar(z, "axes", path, default="", kind=str) or None
        if own_axes and axes and own_axes != axes:
            raise ValueError(f"{path} states axes = {own_axes!r}; --axes {axes} (axes=) would contradict it: drop "
                             "--axes, or write the file again with the axes you mean")
        axes = axes or own_axes
        if axes or "t" in z.files or "x" in z.files:  # the axes are named: any layout
            u, spacing, note = _named(z, path, u, axes, space_dims, components)
        else:  # the documented layout (N, T, C, *space)
            u = as_full_rank(u, space_dims or (1 if u.ndim == 2 else 2), path)
            d = u.ndim - 3
            spacing = {"dt": _scalar(z, "dt", path), "dx": _scalar(z, "dx", path)}
            if d >= 2:
                spacing["dy"] = _scalar(z, "dy", path, default=spacing["dx"])
            if d == 3:
                spacing["dz"] = _scalar(z, "dz", path, default=spacing["dy"])
            note = ""
        c = u.shape[2]
        if components is None:
            if c > len(_DEFAULT_COMPONENTS):
                raise ValueError(f"{path}: u has C = {c} fields; name them with a 'components' array of {c} "
                                 "strings")
            components = _DEFAULT_COMPONENTS[:c]
    if bc is not None and own_bc and bc != own_bc:
        raise ValueError(f"{path} states bc = {own_bc!r}; --bc {bc} (bc=) would override it: drop --bc, or "
                         "write the file again with the bc you mean")
    bc = own_bc or bc or "periodic"
    try:
        return Dataset(np.ascontiguousarray(u, dtype=np.float64), bc=bc, components=components, note=note, **spacing)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _named(z, path: str, u: np.ndarray, axes: str | None, space_dims: int | None,
           components: tuple[str, ...] | None) -> tuple[np.ndarray, dict[str, float], str]:
    """An .npz whose axes are named (``axes`` and/or coordinate vectors ``t``, ``x``, ``y``, ``z``), arranged."""
    if axes:
        check_letters(axes)
    coordinates = {}
    space = [a for a in "zyx" if a in axes] if axes else [a for a in "zyx" if a in z.files or "d" + a in z.files]
    for role in ("t", *space):
        if role in z.files:
            coordinates[role] = np.asarray(z[role])
        elif "d" + role in z.files:
            coordinates[role] = _scalar(z, "d" + role, path)
        elif role in "yz" and "dx" in z.files:  # as in the documented layout: dy defaults to dx, dz to dy
            coordinates[role] = _scalar(z, "dy" if role == "z" and "dy" in z.files else "dx", path)
        else:
            raise ValueError(f"{path}: add the {'time' if role == 't' else role} coordinates: an array {role!r} "
                             f"(a vector) or 'd{role}' (the spacing)")
    if space_dims is not None and space_dims != len(space):
        raise ValueError(f"{path}: space_dims = {space_dims} but the file names {len(space)} space axes "
                         f"({', '.join(space) or 'none'}); drop space_dims or make them agree")
    fields = None if components is None else len(components)
    u, spacing, _, note = arrange(u, coordinates, axes=axes, fields=fields, where=path,
                                  how="--axes ORDER (axes=..., or an 'axes' string in the file)")
    return u, spacing, note


def save(data: Dataset, path: str | os.PathLike) -> str:
    """Write ``data`` in the documented format (``u`` as (N, T, *space) for one field); returns the path written."""
    path = os.fspath(path)
    if os.path.isdir(path) or path.endswith(("/", os.sep)):
        raise ValueError(f"--out {path} is a folder; give a file name, e.g. {os.path.join(path, 'data.npz')}")
    if not path.endswith(".npz"):
        path += ".npz"
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    u = data.u[:, :, 0] if data.u.shape[2] == 1 else data.u
    spacings = {name: v for name, v in (("dy", data.dy), ("dz", data.dz)) if v is not None}
    tmp = path[:-4] + ".tmp.npz"  # a half-written file never takes the name
    np.savez_compressed(
        tmp, u=u, space_dims=data.space_dims, dt=data.dt, dx=data.dx, **spacings, bc=np.str_(data.bc),
        components=np.array(data.components),
    )
    os.replace(tmp, path)
    return path
