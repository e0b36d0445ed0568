"""MATLAB ``.mat`` and HDF5 solution data for ``pdeconv discover``: the arrays the user names, as a :class:`Dataset`.

``variables`` maps roles to array names: ``u`` (the solution), ``t`` and ``x`` (required), ``y`` and ``z`` (2-D and
3-D data). A coordinate is a uniform grid vector (its step is the spacing) or a single number (the spacing itself).
The axes of ``u`` are letters of ``n`` (trajectories), ``t``, ``c`` (fields), ``z``, ``y``, ``x``: stated with
``axes`` (e.g. ``"xt"``, the layout of PDE-FIND's ``usol``), else inferred from the coordinates' lengths, else
decided from the data or refused (:func:`pdeconv.discover.axes.arrange`); a decreasing coordinate flips its axis
so that every spacing is positive.

MATLAB v5 to v7 files are read by :func:`scipy.io.loadmat` (numeric arrays only: no structs, cells or objects),
MATLAB v7.3 and HDF5 files by h5py. MATLAB is column-major, so HDF5 holds a v7.3 array with its axes reversed;
they are reversed back, and a v7.3 file reads as the v5 file of the same variables. The kind of file is told by
its first bytes, not its name. Nothing is unpickled.
"""

from __future__ import annotations

import itertools
import os
import zipfile
from collections.abc import Mapping

import numpy as np

from pdeconv.discover.axes import RTOL, arrange, check_letters
from pdeconv.discover.dataset import DEFAULT_COMPONENTS, SPACE_DIMS, Dataset, as_full_rank, shapes
from pdeconv.errors import PdeconvError

__all__ = ["ROLES", "RTOL", "contents", "kind", "load", "read", "save"]

#: the roles an array can play: the solution and its coordinates
ROLES = ("u", "t", "x", "y", "z")
# RTOL (pdeconv.discover.axes): coordinates' steps must agree to it; complex u whose max |Im u| is at most
# RTOL·max |u| is read as real

_HDF5 = b"\x89HDF\r\n\x1a\n"
_MATLAB_NUMERIC = {"double", "single", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"}
_VAR_SYNTAX = "`variables` ROLE=NAME for each of u, t, x (and y, z for 2-D, 3-D)"


def kind(path: str | os.PathLike) -> str | None:
    """``"mat5"`` (MATLAB v5 to v7), ``"mat73"`` (MATLAB v7.3), ``"hdf5"`` or ``None``, by the first bytes."""
    with open(path, "rb") as f:
        head = f.read(520)
    if head[:8] == _HDF5:
        return "hdf5"
    if head[512:520] == _HDF5:  # a 512-byte user block: MATLAB v7.3 writes its text header there
        return "mat73" if head.startswith(b"MATLAB") else "hdf5"
    if head.startswith(b"MATLAB 5.0 MAT-file"):
        return "mat5"
    return None


def contents(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Name → shape of every array in a ``.mat`` or HDF5 file (MATLAB's shapes for ``.mat``; HDF5: dataset paths)."""
    path = os.fspath(path)
    with _open(path) as f:
        return f.contents()


def read(
    path: str | os.PathLike,
    variables: Mapping[str, str],
    *,
    axes: str | None = None,
    complex_part: str | None = None,
    bc: str = "periodic",
    components: tuple[str, ...] | None = None,
) -> Dataset:
    """The :class:`Dataset` of the arrays ``variables`` names in a MATLAB ``.mat`` or HDF5 file.

    ``variables``: role → array name (``{"u": "usol", "t": "t", "x": "x"}``; HDF5 paths like ``"group/u"``);
    one space axis per coordinate among x, y, z. ``axes``: u's axis order when the coordinate lengths leave it
    open, letters of n, t, c, z, y, x (``"xt"``, ``"ntyx"``); one axis beyond t and space is read as n (as c when
    ``components`` names the fields). Spacings
    are the coordinates' mean steps; every step must be within ``max(RTOL, 100·eps)·|step| + 2·eps·max|coordinate|``
    of it (:data:`RTOL` = 1e-6, eps of the array's dtype: float32 files get their rounding).
    ``complex_part``: ``"real"`` or ``"abs"`` for complex u; without it complex u is refused unless its imaginary
    part is negligible (at most :data:`RTOL` of max |u|). ``bc``: the boundary condition (files carry none).
    ``ValueError`` (one line) for anything the file or the request gets wrong.
    """
    path = os.fspath(path)
    if complex_part not in (None, "real", "abs"):
        raise PdeconvError(f"complex_part must be 'real' or 'abs'; got {complex_part!r}")
    with _open(path) as f:
        names = _check_roles(path, variables, f.contents())
        arrays = f.arrays(names)
    u = _real(path, "u", names["u"], arrays["u"], complex_part)
    coordinates = {role: _real(path, role, names[role], arrays[role]) for role in "tzyx" if role in names}
    u, spacing, _, note = arrange(u, coordinates, axes=axes, fields=None if components is None else len(components),
                                  where=path, labels={role: f"{names[role]!r} ({role})" for role in coordinates})
    if components is None:
        c = u.shape[2]
        if c > len(DEFAULT_COMPONENTS):
            raise PdeconvError(f"{path}: u has C = {c} fields; name them (components=[...] of {c} names)")
        components = DEFAULT_COMPONENTS[:c]
    try:
        return Dataset(np.ascontiguousarray(u, dtype=np.float64), bc=bc, components=tuple(components), note=note,
                       **spacing)
    except ValueError as e:
        raise PdeconvError(f"{path}: {e}") from None


# -------------------------------------------------------------------------------------------------- files


def _open(path: str) -> _Mat5 | _Hdf5:
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such data file: {path}")
    what = kind(path)
    if what is None:
        raise PdeconvError(f"{path} is neither a MATLAB .mat file (v5 to v7.3) nor an HDF5 file; from MATLAB, "
                         "save it with save(FILE, ..., '-v7') or '-v7.3'")
    return _Mat5(path) if what == "mat5" else _Hdf5(path, matlab=what == "mat73")


def _listing(found: Mapping[str, tuple[int, ...]], most: int = 30) -> str:
    items = [f"{name} {tuple(shape)}" for name, shape in itertools.islice(found.items(), most)]
    more = f", … ({len(found) - most} more)" if len(found) > most else ""
    return (", ".join(items) + more) if items else "none"


def _not_numeric(a) -> str | None:
    """What ``a`` is, if it is not a numeric array."""
    if not isinstance(a, np.ndarray):
        return f"a {type(a).__name__} (sparse or another object)"
    if a.dtype.names:
        return "a struct (record) array"
    if a.dtype.kind == "O":
        return "a cell array or object"
    if a.dtype.kind in "SUa":
        return "text"
    if a.dtype.kind == "b":
        return "logical"
    if not np.issubdtype(a.dtype, np.number):
        return f"of dtype {a.dtype}"
    return None


class _Mat5:
    """A MATLAB v5 to v7 file through :mod:`scipy.io` (which reads it without running code)."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self) -> _Mat5:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def _whos(self) -> list[tuple[str, tuple[int, ...], str]]:
        from scipy.io import whosmat

        try:
            return whosmat(self.path)
        except Exception as e:  # noqa: BLE001 - scipy raises several kinds for damaged files
            raise PdeconvError(f"{self.path} is a damaged .mat file ({_one_line(e)})") from None

    def contents(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(shape) for name, shape, _ in self._whos()}

    def arrays(self, names: Mapping[str, str]) -> dict[str, np.ndarray]:
        from scipy.io import loadmat

        classes = {name: cls for name, _, cls in self._whos()}
        for role, name in names.items():
            if classes[name] not in _MATLAB_NUMERIC:
                raise PdeconvError(f"{self.path}: {name!r} ({role}) is a MATLAB {classes[name]}, not a numeric array")
        try:
            found = loadmat(self.path, variable_names=list(set(names.values())), squeeze_me=False)
        except Exception as e:  # noqa: BLE001
            raise PdeconvError(f"{self.path} is a damaged .mat file ({_one_line(e)})") from None
        out = {}
        for role, name in names.items():
            if (what := _not_numeric(found[name])) is not None:
                raise PdeconvError(f"{self.path}: {name!r} ({role}) is {what}, not a numeric array")
            out[role] = found[name]
        return out


class _Hdf5:
    """An HDF5 file through h5py; ``matlab``: a MATLAB v7.3 file, whose arrays are stored with reversed axes."""

    def __init__(self, path: str, *, matlab: bool):
        try:
            import h5py
        except ImportError:
            raise PdeconvError(f"{path} is an HDF5 file (MATLAB v7.3 .mat files are too); reading it needs h5py: "
                             "pip install h5py (or pip install 'pdeconv[hdf5]')") from None
        self.path, self.matlab, self.h5py = path, matlab, h5py
        try:
            self.file = h5py.File(path, "r")
        except OSError as e:
            raise PdeconvError(f"{path} is a damaged HDF5 file ({_one_line(e)})") from None

    def __enter__(self) -> _Hdf5:
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()

    def contents(self) -> dict[str, tuple[int, ...]]:
        found = {}

        def visit(name, obj):
            if isinstance(obj, self.h5py.Dataset) and not (self.matlab and name.startswith("#")):  # MATLAB's #refs#
                found[name] = obj.shape[::-1] if self.matlab else obj.shape

        self.file.visititems(visit)
        return found

    def arrays(self, names: Mapping[str, str]) -> dict[str, np.ndarray]:
        return {role: self._array(role, name) for role, name in names.items()}

    def _array(self, role: str, name: str) -> np.ndarray:
        ds = self.file[name]
        if self.matlab:
            cls = ds.attrs.get("MATLAB_class", b"double")
            cls = cls.decode() if isinstance(cls, bytes) else str(cls)
            if cls not in _MATLAB_NUMERIC:
                raise PdeconvError(f"{self.path}: {name!r} ({role}) is a MATLAB {cls}, not a numeric array")
            if ds.attrs.get("MATLAB_empty", 0):
                raise PdeconvError(f"{self.path}: {name!r} ({role}) is empty")
        if ds.dtype.names and set(ds.dtype.names) == {"real", "imag"}:  # MATLAB's (and others') complex numbers
            raw = ds[()]
            a = raw["real"] + 1j * raw["imag"]
        elif ds.dtype.kind in "biufc":
            a = ds[()]
        else:
            what = ("text" if self.h5py.check_string_dtype(ds.dtype) else
                    "references (a MATLAB cell or struct)" if self.h5py.check_ref_dtype(ds.dtype) else
                    "a compound (record) array" if ds.dtype.names else f"of type {ds.dtype}")
            raise PdeconvError(f"{self.path}: {name!r} ({role}) is {what}, not a numeric array")
        a = np.asarray(a)
        if (what := _not_numeric(a)) is not None:
            raise PdeconvError(f"{self.path}: {name!r} ({role}) is {what}, not a numeric array")
        return a.T if self.matlab else a


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# -------------------------------------------------------------------------------------------------- checks


def _check_roles(path: str, variables: Mapping[str, str], found: Mapping[str, tuple[int, ...]]) -> dict[str, str]:
    """``variables`` checked against the roles and the file; array names as the file spells them."""
    unknown = [role for role in variables if role not in ROLES]
    if unknown:
        raise PdeconvError(f"unknown role(s) {', '.join(map(repr, unknown))}; the roles are {', '.join(ROLES)}")
    missing = [role for role in ("u", "t", "x") if role not in variables]
    if missing:
        raise PdeconvError(f"{path}: name the arrays of {', '.join(missing)}: {_VAR_SYNTAX}; "
                         f"arrays in the file: {_listing(found)}")
    if "z" in variables and "y" not in variables:
        raise PdeconvError("z needs y: 3-D data have coordinates z, y and x")
    names = {}
    for role, name in variables.items():
        key = str(name).strip("/")
        if key not in found:
            raise PdeconvError(f"{path} has no array {name!r} (for {role}); arrays in the file: {_listing(found)}")
        names[role] = key
    return names


def _real(path: str, role: str, name: str, a: np.ndarray, complex_part: str | None = None) -> np.ndarray:
    """A real array from ``a``: its real part or modulus as asked, or its real part if Im is negligible."""
    if not np.iscomplexobj(a):
        return a
    if complex_part == "real":
        return a.real
    if complex_part == "abs":
        return np.abs(a)
    im, scale = float(np.abs(a.imag).max(initial=0)), float(np.abs(a).max(initial=0))
    if im <= RTOL * scale:
        return a.real
    hint = ("fit its real part or its modulus with `complex_part` ('real' or 'abs')" if role == "u"
            else "coordinates must be real")
    raise PdeconvError(f"{path}: {name!r} ({role}) is complex (max |Im| = {im:.3g}, max |{role}| = {scale:.3g}); "
                     f"{hint}")


# ------------------------------------------------------------------------------------- .npz, and any file


def _scalar(z, key: str, path: str, *, default=None, kind=float):
    if key not in z.files:
        if default is None:
            raise PdeconvError(f"{path} has no {key!r}; add it (a positive float) to the .npz")
        return default
    a = np.asarray(z[key])
    if a.size != 1:
        raise PdeconvError(f"{path}: {key!r} must be a single value; got an array of shape {a.shape}")
    a = a.reshape(())
    if kind is float:
        if not np.issubdtype(a.dtype, np.number):
            raise PdeconvError(f"{path}: {key!r} must be a number; got {a.dtype}")
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
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such data file: {path}")
    if kind(path) is not None:
        return read(path, variables or {}, axes=axes, complex_part=complex_part, bc=bc or "periodic")
    if os.path.splitext(path)[1].lower() in (".mat", ".h5", ".hdf5", ".he5"):
        raise PdeconvError(f"{path} is neither a MATLAB .mat file (v5 to v7.3) nor an HDF5 file; from MATLAB, save "
                         "it with save(FILE, ..., '-v7') or '-v7.3'")
    if variables or complex_part:
        raise PdeconvError(f"{path} is not a .mat or HDF5 file: `variables` and `complex_part` are for those; an "
                         ".npz names its own arrays u, t (or dt), x (or dx), and `axes` works for it too")
    with open(path, "rb") as f:
        head = f.read(6)
    if head[:4] != b"PK\x03\x04" and head != b"\x93NUMPY":
        what = "a pickle (pdeconv does not load pickles: they can run code)" if head[:1] == b"\x80" else \
            "neither an .npz archive nor an .npy array (nor a .mat or HDF5 file)"
        raise PdeconvError(f"{path} is {what}; save solution data with numpy.savez(path, u=..., dt=..., dx=..., "
                         "dy=...) (docs/discover.md)")
    try:
        z = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise PdeconvError(f"{path} is a damaged .npz archive ({_one_line(e)}); write it again") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise PdeconvError(f"{path} is a single .npy array, not an .npz archive with 'u', 'dt', 'dx'")
    with z:
        if "u" not in z.files:
            raise PdeconvError(f"{path} has no array 'u'; expected u of shape {shapes(2)} (space_dims 2, the default)")
        try:
            u = np.asarray(z["u"])
        except ValueError as e:  # object arrays would need pickle
            raise PdeconvError(f"{path}: 'u' must be a numeric array ({_one_line(e)})") from None
        if not (np.issubdtype(u.dtype, np.floating) or np.issubdtype(u.dtype, np.integer)):
            raise PdeconvError(f"{path}: 'u' must be a float array; got dtype {u.dtype}")
        space_dims = None
        if "space_dims" in z.files:
            v = np.asarray(z["space_dims"])
            if v.size != 1 or not np.issubdtype(v.dtype, np.integer) or int(v.reshape(())) not in SPACE_DIMS:
                raise PdeconvError(f"{path}: 'space_dims' must be one integer, 1, 2 or 3; got {v!r}")
            space_dims = int(v.reshape(()))
        components = tuple(str(s) for s in np.atleast_1d(z["components"])) if "components" in z.files else None
        own_bc = _scalar(z, "bc", path, default="", kind=str)
        own_axes = _scalar(z, "axes", path, default="", kind=str) or None
        if own_axes and axes and own_axes != axes:
            raise PdeconvError(f"{path} states axes = {own_axes!r}; `axes` {axes} would contradict it: drop "
                             "`axes`, or write the file again with the axes you mean")
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
            if c > len(DEFAULT_COMPONENTS):
                raise PdeconvError(f"{path}: u has C = {c} fields; name them with a 'components' array of {c} "
                                 "strings")
            components = DEFAULT_COMPONENTS[:c]
    if bc is not None and own_bc and bc != own_bc:
        raise PdeconvError(f"{path} states bc = {own_bc!r}; `bc` {bc} would override it: drop `bc`, or "
                         "write the file again with the bc you mean")
    bc = own_bc or bc or "periodic"
    try:
        return Dataset(np.ascontiguousarray(u, dtype=np.float64), bc=bc, components=components, note=note, **spacing)
    except ValueError as e:
        raise PdeconvError(f"{path}: {e}") from None


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
            raise PdeconvError(f"{path}: add the {'time' if role == 't' else role} coordinates: an array {role!r} "
                             f"(a vector) or 'd{role}' (the spacing)")
    if space_dims is not None and space_dims != len(space):
        raise PdeconvError(f"{path}: space_dims = {space_dims} but the file names {len(space)} space axes "
                         f"({', '.join(space) or 'none'}); drop space_dims or make them agree")
    fields = None if components is None else len(components)
    u, spacing, _, note = arrange(u, coordinates, axes=axes, fields=fields, where=path,
                                  how="`axes` ORDER (or an 'axes' string in the file)")
    return u, spacing, note


def save(data: Dataset, path: str | os.PathLike) -> str:
    """Write ``data`` in the documented format (``u`` as (N, T, *space) for one field); returns the path written."""
    path = os.fspath(path)
    if os.path.isdir(path) or path.endswith(("/", os.sep)):
        raise PdeconvError(f"{path} is a folder; give a file name, e.g. {os.path.join(path, 'data.npz')}")
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
