"""pdeconv.discover.formats: MATLAB v5 and v7.3 .mat and HDF5 files in their real layouts; `discover fit` on them."""

import json
import sys

import h5py
import numpy as np
import pytest
import scipy.io

from pdeconv import cli
from pdeconv.discover import formats, load

RNG = np.random.default_rng(0)
# dyadic coordinates: their steps are exact, so spacings compare with ==
NX, NT = 16, 9
X = -1 + 0.125 * np.arange(NX)  # dx = 0.125
T = 0.25 * np.arange(NT)  # dt = 0.25
PDEFIND = {"u": "usol", "t": "t", "x": "x"}


def _pdefind_mat(path, usol=None):
    """A PDE-FIND-like v5 file: usol complex (x, t), x (1, nx), t (nt, 1). The imaginary part of PDE-FIND's
    burgers.mat is not exactly zero but below 1e-8 of max |u| (an FFT's rounding): so here."""
    if usol is None:
        usol = RNG.standard_normal((NX, NT)) + 1e-9j * RNG.standard_normal((NX, NT))
    scipy.io.savemat(path, {"usol": usol, "x": X[None, :], "t": T[:, None]})
    return usol


def _v73(path, arrays: dict):
    """A MATLAB v7.3-like file: HDF5 with a 512-byte text header, each array stored with its axes reversed."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, a in arrays.items():
            a = np.asarray(a)
            if np.iscomplexobj(a):  # MATLAB's complex: a compound of real and imag
                stored = np.empty(a.shape, dtype=[("real", "<f8"), ("imag", "<f8")])
                stored["real"], stored["imag"] = a.real, a.imag
                a = stored
            f.create_dataset(name, data=a.T)
            f[name].attrs["MATLAB_class"] = np.bytes_("double")
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .".ljust(128))


def _h5(path, arrays: dict):
    with h5py.File(path, "w") as f:
        for name, a in arrays.items():
            f.create_dataset(name, data=a)


def _message(call) -> str:
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


# -------------------------------------------------------------------------------------------------- reading


def test_pdefind_like_v5_mat_reads_u_as_t_x_with_its_spacings(tmp_path):
    path = tmp_path / "burgers.mat"
    usol = _pdefind_mat(path)
    assert formats.kind(path) == "mat5"
    d = load(path, variables=PDEFIND)
    assert d.u.shape == (1, NT, 1, NX) and d.u.dtype == np.float64 and d.space_dims == 1
    assert np.array_equal(d.u[0, :, 0], usol.real.T)
    assert (d.dt, d.dx, d.dy, d.bc, d.components) == (0.25, 0.125, None, "periodic", ("u",))


def test_v73_mat_reads_as_the_v5_file_of_the_same_variables(tmp_path):
    u = RNG.standard_normal((NT, 6, NX)) + 0j  # MATLAB variable u(t, y, x), complex with zero imaginary part
    y = 0.5 * np.arange(6)
    arrays = {"u": u, "t": T[:, None], "x": X[None, :], "y": y[None, :]}
    scipy.io.savemat(tmp_path / "v5.mat", arrays)
    _v73(tmp_path / "v73.mat", arrays)
    assert formats.kind(tmp_path / "v73.mat") == "mat73"
    assert formats.contents(tmp_path / "v73.mat") == formats.contents(tmp_path / "v5.mat")
    names = {"u": "u", "t": "t", "x": "x", "y": "y"}
    v5, v73 = load(tmp_path / "v5.mat", variables=names), load(tmp_path / "v73.mat", variables=names)
    assert np.array_equal(v73.u, v5.u) and np.array_equal(v5.u[0, :, 0], u.real)
    assert (v73.dt, v73.dx, v73.dy) == (v5.dt, v5.dx, v5.dy) == (0.25, 0.125, 0.5)
    # the axes are MATLAB's, as stated (not only as inferred): t, y, x
    assert np.array_equal(load(tmp_path / "v73.mat", variables=names, axes="tyx").u, v5.u)


def test_h5_with_groups_infers_the_axes_from_the_coordinates(tmp_path):
    u = RNG.standard_normal((3, NT, 6, NX))  # (n, t, y, x)
    path = tmp_path / "run.h5"
    _h5(path, {"sim/u": u, "grid/t": T, "grid/x": X, "grid/y": 0.5 * np.arange(6), "notes/dx": 0.125})
    assert formats.kind(path) == "hdf5"
    d = load(path, variables={"u": "sim/u", "t": "/grid/t", "x": "grid/x", "y": "grid/y"})
    assert d.u.shape == (3, NT, 1, 6, NX) and np.array_equal(d.u[:, :, 0], u)
    assert (d.dt, d.dx, d.dy) == (0.25, 0.125, 0.5)
    # u stored (x, y, t, n), y a single number (the spacing itself): y and n may be either axis of 6 and 3
    _h5(tmp_path / "xytn.h5", {"u": u.transpose(3, 2, 1, 0), "t": T, "x": X, "dy": 0.5})
    names = {"u": "u", "t": "t", "x": "x", "y": "dy"}
    assert "several axis orders (xytn, xnty)" in _message(lambda: load(tmp_path / "xytn.h5", variables=names))
    e = load(tmp_path / "xytn.h5", variables=names, axes="xytn")
    assert np.array_equal(e.u, d.u) and (e.dt, e.dx, e.dy) == (0.25, 0.125, 0.5)


def test_the_kind_is_told_by_the_first_bytes_not_the_name(tmp_path):
    _h5(tmp_path / "data.npz", {"u": RNG.standard_normal((NT, NX)), "t": T, "x": X})
    d = load(tmp_path / "data.npz", variables={"u": "u", "t": "t", "x": "x"})
    assert d.u.shape == (1, NT, 1, NX)
    (tmp_path / "fake.mat").write_text("not a MAT-file")
    assert "neither a MATLAB .mat file" in _message(lambda: load(tmp_path / "fake.mat", variables=PDEFIND))


def test_axes_override_and_fields(tmp_path):
    u = RNG.standard_normal((NT, 2, 6, NX))  # (t, c, y, x)
    _h5(tmp_path / "uv.h5", {"u": u, "t": T, "x": X, "y": 0.5 * np.arange(6)})
    names = {"u": "u", "t": "t", "x": "x", "y": "y"}
    d = load(tmp_path / "uv.h5", variables=names, axes="tcyx")
    assert d.u.shape == (1, NT, 2, 6, NX) and np.array_equal(d.u[0], u) and d.components == ("u", "v")
    # without axes the extra axis is read as trajectories
    assert load(tmp_path / "uv.h5", variables=names).u.shape == (2, NT, 1, 6, NX)
    d = formats.read(tmp_path / "uv.h5", names, components=("p", "q"))
    assert np.array_equal(d.u[0], u) and d.components == ("p", "q")
    message = _message(lambda: load(tmp_path / "uv.h5", variables=names, axes="tyx"))
    assert "names 3 axes but u has 4" in message


def test_square_arrays_need_axes(tmp_path):
    u = RNG.standard_normal((8, 8))
    _h5(tmp_path / "sq.h5", {"u": u, "t": T[:8], "x": X[:8]})
    names = {"u": "u", "t": "t", "x": "x"}
    message = _message(lambda: load(tmp_path / "sq.h5", variables=names))
    assert "fits several axis orders" in message and "say which is right with `axes` ORDER" in message
    assert "--" not in message  # a Python caller reads the parameter, not the command line's flag
    assert np.array_equal(load(tmp_path / "sq.h5", variables=names, axes="tx").u[0, :, 0], u)
    assert np.array_equal(load(tmp_path / "sq.h5", variables=names, axes="xt").u[0, :, 0], u.T)


def test_coordinates_must_be_uniform_and_a_decreasing_one_flips_its_axis(tmp_path):
    x = X.copy()
    x[5] += 1e-4
    scipy.io.savemat(tmp_path / "bent.mat", {"usol": RNG.standard_normal((NX, NT)), "x": x, "t": T})
    message = _message(lambda: load(tmp_path / "bent.mat", variables=PDEFIND))
    assert "'x' (x) is not uniform: steps from 0.1249 to 0.1251" in message
    # float32 coordinates far from 0 are uniform up to their rounding
    t32 = (100 + 0.01 * np.arange(NT)).astype(np.float32)
    assert np.any(np.diff(t32) != np.diff(t32)[0])
    u = RNG.standard_normal((NT, NX))
    _h5(tmp_path / "f32.h5", {"u": u, "t": t32, "x": X[::-1]})
    d = load(tmp_path / "f32.h5", variables={"u": "u", "t": "t", "x": "x"})
    assert d.dt == pytest.approx(0.01, rel=1e-4) and d.dx == 0.125  # float32 rounding at 100: 8e-6
    assert np.array_equal(d.u[0, :, 0], u[:, ::-1])


def test_complex_u_is_refused_unless_real_or_abs_is_chosen(tmp_path):
    usol = RNG.standard_normal((NX, NT)) + 1j * RNG.standard_normal((NX, NT))
    _pdefind_mat(tmp_path / "c.mat", usol)
    message = _message(lambda: load(tmp_path / "c.mat", variables=PDEFIND))
    assert "'usol' (u) is complex" in message and "with `complex_part` ('real' or 'abs')" in message
    d = load(tmp_path / "c.mat", variables=PDEFIND, complex_part="real")
    assert np.array_equal(d.u[0, :, 0], usol.real.T)
    d = load(tmp_path / "c.mat", variables=PDEFIND, complex_part="abs")
    assert np.array_equal(d.u[0, :, 0], np.abs(usol).T)


def test_unknown_missing_and_non_numeric_arrays_are_named(tmp_path):
    _pdefind_mat(tmp_path / "b.mat")
    message = _message(lambda: load(tmp_path / "b.mat"))
    assert "`variables` ROLE=NAME for each of u, t, x" in message and "--var" not in message
    assert "usol (16, 9), x (1, 16), t (9, 1)" in message
    message = _message(lambda: load(tmp_path / "b.mat", variables=dict(PDEFIND, u="u")))
    assert "has no array 'u' (for u); arrays in the file: usol (16, 9)" in message
    _h5(tmp_path / "g.h5", {"sim/u": np.zeros((NT, NX)), "grid/t": T, "grid/x": X})
    message = _message(lambda: load(tmp_path / "g.h5", variables={"u": "u", "t": "grid/t", "x": "grid/x"}))
    assert "grid/t (9,), grid/x (16,), sim/u (9, 16)" in message
    scipy.io.savemat(tmp_path / "s.mat", {"u": "text", "s": {"a": 1.0}, "t": T, "x": X})
    for role, name, what in (("u", "u", "MATLAB char"), ("u", "s", "MATLAB struct"), ("v", "u", "unknown role")):
        message = _message(lambda: load(tmp_path / "s.mat", variables={role: name, "t": "t", "x": "x"}))  # noqa: B023
        assert what in message
    _h5(tmp_path / "len.h5", {"u": np.zeros((NT, NX)), "t": T, "x": X[:-1]})
    message = _message(lambda: load(tmp_path / "len.h5", variables={"u": "u", "t": "t", "x": "x"}))
    assert "does not match the coordinate lengths (t: 9, x: 15)" in message


def test_without_h5py_the_message_says_how_to_install_it(tmp_path, monkeypatch):
    _h5(tmp_path / "a.h5", {"u": np.zeros((NT, NX)), "t": T, "x": X})
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py raises ImportError
    assert "pip install h5py" in _message(lambda: load(tmp_path / "a.h5", variables={"u": "u", "t": "t", "x": "x"}))


def test_npz_keeps_its_own_arrays_and_bc(tmp_path):
    np.savez(tmp_path / "a.npz", u=np.zeros((4, NT, NX)), dt=0.1, dx=0.5)
    np.savez(tmp_path / "b.npz", u=np.zeros((4, NT, NX)), dt=0.1, dx=0.5, bc="periodic")
    assert load(tmp_path / "a.npz", bc="neumann").bc == "neumann"
    assert load(tmp_path / "b.npz", bc="periodic").bc == "periodic"
    assert "states bc = 'periodic'" in _message(lambda: load(tmp_path / "b.npz", bc="neumann"))
    assert "`variables` and `complex_part` are for those" in _message(lambda: load(tmp_path / "a.npz",
                                                                                   variables=PDEFIND))


# -------------------------------------------------------------------------------------------------- CLI


def test_cli_fits_a_2d_h5_file(tmp_path, capsys):
    # heat equation, exact: u = Σ a e^{-κ(k²+l²)t} sin(kx + ly + φ) on a periodic 12 × 16 grid, y before x
    H, W, kappa = 12, 16, 0.1
    t, y, x = 0.05 * np.arange(8), np.arange(H) * 2 * np.pi / H, np.arange(W) * 2 * np.pi / W
    rng = np.random.default_rng(1)
    u = np.zeros((3, len(t), H, W))
    for n in range(3):
        for k, l in ((1, 0), (0, 1), (1, 1), (2, 1)):
            a, phase = rng.standard_normal(2)
            u[n] += a * np.exp(-kappa * (k * k + l * l) * t)[:, None, None] * np.sin(
                k * x[None, None, :] + l * y[None, :, None] + phase)
    path = tmp_path / "heat.h5"
    _h5(path, {"data/u": u, "data/t": t, "data/x": x, "data/y": y})
    out = tmp_path / "fit"
    argv = ["discover", "fit", str(path), "--var", "u=data/u", "--var", "t=data/t", "--var", "x=data/x",
            "--var", "y=data/y", "--out", str(out), "--kernel-size", "5", "--iterations", "0", "--no-progress"]
    assert cli.main(argv) == 0
    assert str(out / "pde.json") in capsys.readouterr().out
    pde = json.loads((out / "pde.json").read_text())
    grid = pde["grid"]
    assert (grid["dx"], grid["dy"], grid["dt"]) == pytest.approx((x[1], y[1], t[1]), rel=1e-12)
    assert grid["bc"] == "periodic"
    assert pde["equations"]["u"]["terms"]["u_xx"] == pytest.approx(kappa, rel=0.05)


BAD = {
    "bad --var": (["--var", "u:usol"], "--var takes ROLE=NAME"),
    "twice": (["--var", "u=usol", "--var", "u=x"], "--var u= given twice"),
    "no --var": ([], "name the arrays of u, t, x: --var ROLE=NAME for each of u, t, x"),
    "unknown name": (["--var", "u=U", "--var", "t=t", "--var", "x=x"], "has no array 'U'"),
    "complex": (["--var", "u=usol", "--var", "t=t", "--var", "x=x"],
                "fit its real part or its modulus with --real or --abs"),
    "axes": (["--var", "u=usol", "--var", "t=t", "--var", "x=x", "--axes", "tq", "--real"], "axes 'tq' must name"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(case, tmp_path, capsys):
    _pdefind_mat(tmp_path / "c.mat", RNG.standard_normal((NX, NT)) * (1 + 1j))
    options, says = BAD[case]
    out = tmp_path / "out"
    assert cli.main(["discover", "fit", str(tmp_path / "c.mat"), *options, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_cli_real_and_abs_exclude_each_other(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["discover", "fit", "x.mat", "--real", "--abs", "--out", str(tmp_path / "out")])
    assert info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
