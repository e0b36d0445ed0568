"""A user's own arrays, in the layouts people store them: read right (0.5·u_xx from a heat equation) or refused
with the fix; failed fits exit 3; strict JSON; a CLI that starts without torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.io

from pdeconv import cli
from pdeconv.discover import Dataset, fit, load
from pdeconv.discover.report import strict_json

KAPPA = 0.5
# Clean data, exact in time (each Fourier mode decays as exp(−κk²t)), so the only errors are the fit's own
# differences: 7-point in time (error ~ (κk²·dt)^6 ≤ 1e-12 here) and 11-point filters in space (spectrally small
# for k ≤ 4 of 48 points). 1e-3 is far above that and far below what a misread axis or unit gives (the data
# read the wrong way give no diffusion coefficient at all; the normalised coefficient reads 1, not 0.5).
TOL = 1e-3
FAST = dict(iterations=0, progress=False)  # the regression alone: seconds


def heat(nx: int = 48, nt: int = 60, dt: float = 2e-3, seed: int = 0):
    """u (nt, nx) of u_t = κ u_xx on [0, 2π), periodic, and its coordinates t (nt,), x (nx,)."""
    rng = np.random.default_rng(seed)
    x = 2 * np.pi * np.arange(nx) / nx
    t = dt * np.arange(nt)
    u = np.zeros((nt, nx))
    for k in range(1, 5):
        a, b = rng.standard_normal(2)
        u += np.exp(-KAPPA * k * k * t)[:, None] * (a * np.cos(k * x) + b * np.sin(k * x))[None]
    return u, t, x


def strict(text: str):
    """json.loads that refuses NaN and ±Infinity (as JavaScript's JSON.parse does)."""
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def _only_uxx(equations: dict) -> float:
    assert list(equations) == ["u"] and list(equations["u"]) == ["u_xx"], equations
    return equations["u"]["u_xx"]


def _cli_fit(tmp_path, path, *extra) -> tuple[int, dict, str]:
    out = tmp_path / "fit"
    rc = cli.main(["discover", "fit", str(path), "--out", str(out), "--iterations", "0", "--no-progress", *extra])
    return rc, strict((out / "pde.json").read_text()) if (out / "pde.json").exists() else {}, str(out)


def test_xt_npz_with_its_axes_named_gives_half_uxx(tmp_path, capsys):
    u, t, x = heat()
    np.savez(tmp_path / "heat_xt.npz", u=u.T, dt=t[1], dx=x[1], axes="xt")  # PDE-FIND's usol layout, named
    rc, pde, _ = _cli_fit(tmp_path, tmp_path / "heat_xt.npz")
    assert rc == 0
    assert _only_uxx({"u": pde["equations"]["u"]["terms"]}) == pytest.approx(KAPPA, rel=TOL)
    # coordinate vectors say the same without 'axes', and --axes says it for a file that does not
    np.savez(tmp_path / "coords.npz", u=u.T, t=t, x=x)
    np.savez(tmp_path / "plain.npz", u=u.T, dt=t[1], dx=x[1])
    want = u[None, :, None]
    assert np.array_equal(load(tmp_path / "coords.npz").u, want)
    assert np.array_equal(load(tmp_path / "plain.npz", axes="xt").u, want)
    assert np.array_equal(load(tmp_path / "plain.npz").u, u.T[None, :, None])  # the documented (T, W) layout
    d = load(tmp_path / "coords.npz")
    assert (d.dt, d.dx, d.space_dims) == (pytest.approx(t[1]), pytest.approx(x[1]), 1)


@pytest.mark.parametrize("nt", [60, 48], ids=["non-square", "square"])
def test_mat_in_pdefind_layout_gives_half_uxx(tmp_path, capsys, nt):
    u, t, x = heat(nt=nt)
    scipy.io.savemat(tmp_path / "heat.mat", {"usol": u.T, "t": t[:, None], "x": x[None]})
    rc, pde, _ = _cli_fit(tmp_path, tmp_path / "heat.mat", "--var", "u=usol", "--var", "t=t", "--var", "x=x")
    assert rc == 0
    assert _only_uxx({"u": pde["equations"]["u"]["terms"]}) == pytest.approx(KAPPA, rel=TOL)
    printed = capsys.readouterr().out
    if nt == 48:  # square: decided from the data, and said
        assert "axes: u of shape (48, 48) fits several axis orders; read as xt" in printed
        assert pde["axes"].startswith("u of shape (48, 48)")
    else:
        assert "axes:" not in printed and "axes" not in pde


@pytest.mark.parametrize("layout", ["tx", "xt"])
def test_from_python_either_layout_with_its_axes_named(layout):
    u, t, x = heat()
    stored = u if layout == "tx" else u.T
    data = Dataset.from_array(stored, t=t[1], x=x[1], axes=layout)  # spacings as single numbers
    assert data.u.shape == (1, 60, 1, 48) and data.note == ""
    result = fit(data, **FAST)
    c = _only_uxx(result.equations)
    assert c == pytest.approx(KAPPA, rel=TOL)
    # the model's public coefficients are the same number, in the data's units (not the normalised ĉ)
    j = result.model.names.index("u_xx")
    assert float(result.model.coefficients[0, j, 0].detach()) == pytest.approx(c, rel=1e-12)
    assert float(result.model.normalised[0, j, 0].detach()) != pytest.approx(c, rel=1e-3)


def test_from_array_reads_orders_coordinates_and_fields():
    u, t, x = heat(nx=16, nt=12)
    assert np.array_equal(Dataset.from_array(u.T, t=t, x=x).u, u[None, :, None])  # order from the lengths
    assert np.array_equal(Dataset.from_array(u[::-1], t=t[::-1], x=x).u, u[None, :, None])  # decreasing t flips
    uv = np.stack([u, 2 * u], axis=1)  # (t, c, x)
    d = Dataset.from_array(uv, t=t, x=x, components=("p", "q"))
    assert d.components == ("p", "q") and np.array_equal(d.u[0], uv)
    y = 0.5 * np.arange(5)
    u2 = np.random.default_rng(1).standard_normal((3, 12, 5, 16))  # (n, t, y, x)
    d = Dataset.from_array(u2.transpose(3, 2, 1, 0), t=t, x=x, y=y)  # stored (x, y, t, n)
    assert np.array_equal(d.u[:, :, 0], u2) and (d.dy, d.space_dims) == (0.5, 2)


def test_an_order_the_data_do_not_decide_is_refused_with_every_candidate_spelled_out():
    noise = np.random.default_rng(0).standard_normal((20, 20))  # no PDE behind it: no order explains it
    with pytest.raises(ValueError) as e:
        Dataset.from_array(noise, t=0.1, x=0.1)
    message = str(e.value)
    assert "tx (axis 0: time, 20; axis 1: x, 20)" in message and "xt (axis 0: x, 20; axis 1: time, 20)" in message
    assert "say which is right with axes='ORDER'" in message
    with pytest.raises(ValueError, match="must name each axis of u once"):
        Dataset.from_array(noise, t=0.1, x=0.1, axes="tq")


@pytest.mark.parametrize("grid", [(128, 200, 1e-3), (48, 60, 2e-3)], ids=["issue's 128x200", "48x60"])
def test_swapped_axes_fail_with_status_3_and_say_why(tmp_path, capsys, grid):
    nx, nt, dt = grid
    u, t, x = heat(nx=nx, nt=nt, dt=dt)
    np.savez(tmp_path / "heat_xt.npz", u=u.T, dt=t[1], dx=x[1], space_dims=1)  # (x, t), not said: read as (t, x)
    rc, pde, out = _cli_fit(tmp_path, tmp_path / "heat_xt.npz")
    err = capsys.readouterr().err.strip()
    assert rc == 3 and len(err.splitlines()) == 1
    assert err.index("misread axes") < err.index("wrong dt or dx") and "--axes xt" in err
    assert "with time and x swapped a quick linear fit explains 100%" in err
    assert "misread axes" in pde["failed"] and "`axes` xt" in pde["failed"] and "--axes" not in pde["failed"]
    # failed for one of the two documented reasons: < 10% explained, or a rollout that blows up (null in JSON)
    assert pde["explained_share"] < 0.1 or None in pde["prediction_error"]["relative_l2"]


def test_json_is_strict_where_values_are_not_finite(tmp_path):
    text = strict_json({"a": float("nan"), "b": [1.0, np.float64(np.inf), -np.inf], "c": np.array([0.5, np.nan])})
    assert strict(text) == {"a": None, "b": [1.0, None, None], "c": [0.5, None]}
    with pytest.raises(ValueError, match="not strict JSON"):
        strict(json.dumps({"a": float("nan")}))  # the control: the default json.dumps writes NaN


def test_boundary_conditions_named_for_data_are_the_layers_own():
    from pdeconv.boundary import BOUNDARY_CONDITIONS
    from pdeconv.discover.dataset import BOUNDARY_CONDITIONS as NAMED

    assert tuple(BOUNDARY_CONDITIONS) == NAMED


def _imports_torch(code: str) -> bool:
    probe = f"import sys\n{code}\nprint('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1] == "True"


@pytest.mark.slow
def test_help_argument_errors_and_data_checks_import_no_torch(tmp_path):
    def main(*argv: str) -> str:
        return f"from pdeconv.cli import main\ntry:\n    main({list(argv)!r})\nexcept SystemExit:\n    pass"

    bad = tmp_path / "bad.npz"
    np.savez(bad, u=np.zeros((4, 5)), dt=0.1)  # no dx
    assert not _imports_torch(main("--help"))
    assert not _imports_torch(main("discover", "fit", "--help"))
    assert not _imports_torch(main("discover", "fit", "--bogus"))
    assert not _imports_torch(main("discover", "fit", str(bad), "--out", str(tmp_path / "o")))
    assert not _imports_torch("from pdeconv import discover\nimport pdeconv.discover.formats")
    assert _imports_torch(main("train", "--help"))  # the control: the training commands' options need it
    # fit is still the function once its submodule is imported, and loads torch only then
    assert _imports_torch("from pdeconv import discover\nimport pdeconv.discover.fit\nassert callable(discover.fit)"
                          "\nassert discover.fit.__name__ == 'fit'")
