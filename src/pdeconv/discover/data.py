"""The solution-data format of ``pdeconv discover``: one ``.npz`` file, read and checked.

Arrays in the file:

* ``u``: float array ``(T, H, W)`` (one trajectory), ``(N, T, H, W)`` (N trajectories) or, for a system of C
  fields, ``(N, T, C, H, W)`` with ``components`` naming them (e.g. ``["u", "v"]``; default u, v, w);
* ``dt``: time between frames; ``dx``: grid spacing along x, the width axis (columns); ``dy``: spacing along y,
  the height axis (rows, pointing down), defaults to ``dx``; ``bc``: boundary condition, default ``"periodic"``.

Frame ``u[n, t, c, i, j]`` samples field c of trajectory n at time ``t·dt`` and position ``(x, y) = (j·dx, i·dy)``.
Files are read with ``allow_pickle=False``: an ``.npz`` never runs code.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass

import numpy as np

from pdeconv.boundary import padding_mode

__all__ = ["Dataset", "load", "save", "MIN_FRAMES"]

#: fewest frames per trajectory a fit can use (a time derivative needs two steps)
MIN_FRAMES = 3
_DEFAULT_COMPONENTS = ("u", "v", "w")


@dataclass
class Dataset:
    """Solution data ``u`` of shape ``(N, T, C, H, W)`` (float64) on a grid with spacings ``dx`` (x, W) and ``dy``."""

    u: np.ndarray
    dt: float
    dx: float
    dy: float
    bc: str = "periodic"
    components: tuple[str, ...] = ("u",)

    def __post_init__(self) -> None:
        _validate(self)


def _one_line(what: str) -> str:
    return " ".join(what.split())


def _validate(d: Dataset) -> None:
    u = d.u
    if u.ndim != 5:
        raise ValueError(f"u must have shape (N, T, C, H, W) inside a Dataset; got {u.shape}")
    n, t, c, h, w = u.shape
    if min(n, c, h, w) < 1:
        raise ValueError(f"u is empty: shape (N, T, C, H, W) = {u.shape}")
    if t < MIN_FRAMES:
        raise ValueError(f"u has {t} time step(s) per trajectory; a fit needs at least {MIN_FRAMES} frames")
    bad = int(np.size(u) - np.count_nonzero(np.isfinite(u)))
    if bad:
        raise ValueError(f"u contains {bad} NaN or infinite value(s); remove or repair those frames")
    for name in ("dt", "dx", "dy"):
        v = getattr(d, name)
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive number; got {v}")
    padding_mode(d.bc)  # raises with the list of valid names
    if len(d.components) != c:
        raise ValueError(f"components names {len(d.components)} field(s) {list(d.components)} but u has C = {c}")
    for name in d.components:
        if not (name.isidentifier() and "_" not in name and name != "1"):
            raise ValueError(f"component name {name!r} must be a letter/digit identifier without '_' (e.g. u, v)")
    if len(set(d.components)) != c:
        raise ValueError(f"component names must be unique; got {list(d.components)}")


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


def load(path: str | os.PathLike) -> Dataset:
    """Read and check a data file; ``ValueError`` (one line) if it is malformed, ``FileNotFoundError`` if absent."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such data file: {path}")
    with open(path, "rb") as f:
        head = f.read(6)
    if head[:4] != b"PK\x03\x04" and head != b"\x93NUMPY":
        kind = "a pickle (pdeconv does not load pickles: they can run code)" if head[:1] == b"\x80" else \
            "neither an .npz archive nor an .npy array"
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
            raise ValueError(f"{path} has no array 'u'; expected u of shape (T, H, W), (N, T, H, W) or (N, T, C, H, W)")
        try:
            u = np.asarray(z["u"])
        except ValueError as e:  # object arrays would need pickle
            raise ValueError(f"{path}: 'u' must be a numeric array ({_one_line(str(e))})") from None
        if not (np.issubdtype(u.dtype, np.floating) or np.issubdtype(u.dtype, np.integer)):
            raise ValueError(f"{path}: 'u' must be a float array; got dtype {u.dtype}")
        if u.ndim == 3:
            u = u[None, :, None]
        elif u.ndim == 4:
            u = u[:, :, None]
        elif u.ndim != 5:
            raise ValueError(
                f"{path}: 'u' has rank {u.ndim} (shape {u.shape}); expected (T, H, W), (N, T, H, W) or (N, T, C, H, W)"
            )
        c = u.shape[2]
        if "components" in z.files:
            components = tuple(str(s) for s in np.atleast_1d(z["components"]))
        elif c <= len(_DEFAULT_COMPONENTS):
            components = _DEFAULT_COMPONENTS[:c]
        else:
            raise ValueError(f"{path}: u has C = {c} fields; name them with a 'components' array of {c} strings")
        dt = _scalar(z, "dt", path)
        dx = _scalar(z, "dx", path)
        dy = _scalar(z, "dy", path, default=dx)
        bc = _scalar(z, "bc", path, default="periodic", kind=str)
    try:
        return Dataset(np.ascontiguousarray(u, dtype=np.float64), dt, dx, dy, bc, components)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def save(data: Dataset, path: str | os.PathLike) -> str:
    """Write ``data`` in the documented format (``u`` as (N, T, H, W) for one field); returns the path written."""
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    u = data.u[:, :, 0] if data.u.shape[2] == 1 else data.u
    np.savez_compressed(
        path, u=u, dt=data.dt, dx=data.dx, dy=data.dy, bc=np.str_(data.bc), components=np.array(data.components)
    )
    return path
