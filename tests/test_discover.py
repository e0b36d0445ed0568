"""pdeconv.discover: the data format, the reference solvers, the library, the fit, the report and the CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pdeconv import cli
from pdeconv import stencil as S
from pdeconv.boundary import pad
from pdeconv.discover import Dataset, fit, load, save, simulate, solve
from pdeconv.discover.library import build_library
from pdeconv.discover.model import Derivatives
from pdeconv.discover.regression import time_derivative
from pdeconv.discover.report import format_equations

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _grid(H, W):
    """Coordinates (X, Y) of an H×W periodic grid on [0, 2π]²: x along the columns, y along the rows."""
    return np.meshgrid(np.arange(W) * 2 * np.pi / W, np.arange(H) * 2 * np.pi / H)


def _terms(result):
    return {e: set(t) for e, t in result.equations.items()}


# -------------------------------------------------------------------------------------------------- solvers


def test_heat_solver_matches_fourier_mode_decay():
    X, Y = _grid(16, 24)
    u0 = np.cos(2 * X) * np.sin(3 * Y) + 0.5 * np.cos(X + Y)
    u = solve("heat", u0[None, None], dt=0.05, steps=4, params={"kappa": 0.3}, progress=False)
    t = 0.05 * np.arange(5)[:, None, None]
    exact = np.exp(-0.3 * 13 * t) * np.cos(2 * X) * np.sin(3 * Y) + 0.5 * np.exp(-0.3 * 2 * t) * np.cos(X + Y)
    assert u.shape == (1, 5, 1, 16, 24)
    np.testing.assert_allclose(u[0, :, 0], exact, atol=1e-12)


def test_convection_solver_moves_along_x_the_width_axis():
    # u_t = a u_x is a shift towards −x: u(x, y, t) = f(x + a t, y)
    X, Y = _grid(12, 20)
    u0 = np.sin(3 * X + 2 * Y)
    u = solve("convdiff", u0[None, None], dt=0.1, steps=3, params=dict(a=1.0, b=0.0, c=0.0, d=0.0), progress=False)
    for k in range(4):
        np.testing.assert_allclose(u[0, k, 0], np.sin(3 * (X + 0.1 * k) + 2 * Y), atol=1e-12)


def test_burgers_conserves_the_mean_of_a_potential_flow():
    # u = ∇φ + const stays curl-free, so d/dt ∫u = −∫ v u_y = −∫ φ_y φ_xy = 0; viscosity dissipates energy
    X, Y = _grid(32, 32)
    u0 = np.stack([-np.sin(X) * np.sin(2 * Y) + 0.3 * np.cos(X + Y) + 0.5,
                   2 * np.cos(X) * np.cos(2 * Y) + 0.3 * np.cos(X + Y) - 0.3])
    u = solve("burgers", u0[None], dt=0.01, steps=20, progress=False)
    mean = u.mean(axis=(-2, -1))[0]
    np.testing.assert_allclose(mean, np.broadcast_to([0.5, -0.3], mean.shape), atol=1e-12)
    energy = ((u - u.mean(axis=(-2, -1), keepdims=True)) ** 2).sum(axis=(2, 3, 4))[0]
    assert np.all(np.diff(energy) < 0)


def test_simulate_presets_shapes_noise_and_non_square_spacing():
    d = simulate("reaction-diffusion", grid="12x16", steps=3, trajectories=2, noise=0.01, zoom=2, progress=False)
    assert d.u.shape == (2, 4, 2, 12, 16) and d.components == ("u", "v")
    assert d.dx == pytest.approx(2 * np.pi / 16) and d.dy == pytest.approx(2 * np.pi / 12)
    clean = simulate("reaction-diffusion", grid="12x16", steps=3, trajectories=2, zoom=2, progress=False)
    noise = (d.u - clean.u).std(axis=(0, 1, 3, 4)) / clean.u.std(axis=(0, 1, 3, 4))
    np.testing.assert_allclose(noise, 0.01, rtol=0.2)
    with pytest.raises(ValueError, match="choose one of: heat, convdiff"):
        simulate("navier-stokes")
    with pytest.raises(ValueError, match="parameters: nu"):
        simulate("burgers", params={"viscosity": 0.1})


# -------------------------------------------------------------------------------------------------- pieces


def test_time_derivative_is_exact_for_polynomials():
    t = 0.1 * np.arange(9)
    u = torch.tensor(t**6 - 2 * t**3 + t)[None, :, None]
    ut, frames = time_derivative(u, 0.1)
    exact = 6 * t**5 - 6 * t**2 + 1
    assert frames == slice(3, 6)
    np.testing.assert_allclose(ut[0, :, 0].numpy(), exact[frames], rtol=1e-10)
    ut, frames = time_derivative(u[:, :5], 0.1)  # 5 frames: the 5-point stencil, exact to degree 4
    assert frames == slice(2, 3)
    u4 = torch.tensor(t[:5] ** 4)[None, :, None]
    assert float(time_derivative(u4, 0.1)[0][0, 0, 0]) == pytest.approx(4 * t[2] ** 3, rel=1e-10)


def test_filters_keep_their_moment_constraints_and_fft_equals_circular_conv():
    torch.manual_seed(0)
    orders = [(0, 1), (1, 0), (0, 2), (1, 1), (2, 0)]
    d = Derivatives(orders, size=7, spacing=(0.2, 0.3), bc="periodic")
    with torch.no_grad():
        d.free_moments.normal_(0, 30)
    k = d.kernels()
    for p, (a, b) in enumerate(orders):
        M = S.moments(k[p] * 0.2**a * 0.3**b)  # back to grid units
        values, fixed = S.moment_constraints((a, b), 7, accuracy=7 - a - b)
        np.testing.assert_allclose(M[fixed].detach().numpy(), values[fixed].numpy(), atol=1e-9)
        assert (M[~fixed].detach() - values[~fixed]).abs().max() > 1e-3  # the free moments did move
    u = torch.randn(2, 3, 12, 20, dtype=torch.float64)
    conv = F.conv2d(pad(u.reshape(6, 1, 12, 20), 3, "periodic"), k.unsqueeze(1)).view(2, 3, 5, 12, 20)
    conv = conv.detach()
    torch.testing.assert_close(d(u).detach(), conv, rtol=1e-9, atol=1e-9 * float(conv.abs().max()))


def test_library_names():
    names = [t.name for t in build_library(("u", "v"), "nonlinear,polynomial")]
    # by hand from the module docstring: the constant, each field's derivatives of order ≤ 2 (x before y),
    # field × first derivative (w, c, ∂ loops in that order), then monomials of degree 2 and 3
    assert names == [
        "1",
        "u", "u_x", "u_y", "u_xx", "u_xy", "u_yy",
        "v", "v_x", "v_y", "v_xx", "v_xy", "v_yy",
        "u*u_x", "u*u_y", "u*v_x", "u*v_y", "v*u_x", "v*u_y", "v*v_x", "v*v_y",
        "u^2", "u*v", "v^2",
        "u^3", "u^2*v", "u*v^2", "v^3",
    ]
    assert [t.name for t in build_library(("u",))] == ["u", "u_x", "u_y", "u_xx", "u_xy", "u_yy"]
    with pytest.raises(ValueError, match="choose from linear, nonlinear, products, polynomial"):
        build_library(("u",), "cubic")


def test_format_equations():
    eqs = {"u": {"u_xx": 0.2, "u*u_x": -1.0, "1": 0.5}, "v": {}}
    assert format_equations(eqs, {"u": ["u_xx"]}) == "u_t = 0.2(x,y)·u_xx − 1·u*u_x + 0.5\nv_t = 0"
    assert format_equations({"u": {"u_xx": 0.2}}, {"u": ["u_xx"]}, space_dims=1) == "u_t = 0.2(x)·u_xx"


# -------------------------------------------------------------------------------------------------- fit


def test_fit_heat_recovers_the_diffusion_coefficient():
    data = simulate("heat", grid="16x20", steps=8, trajectories=2, params={"kappa": 0.15}, progress=False)
    result = fit(data, iterations=5, progress=False)
    assert _terms(result) == {"u": {"u_xx", "u_yy"}}
    for term in ("u_xx", "u_yy"):
        assert result.equations["u"][term] == pytest.approx(0.15, rel=1e-2)
    assert result.error_source == "held-out" and result.error[-1] < 1e-2


def test_fit_convection_diffusion_recovers_each_coefficient_and_nothing_else():
    data = simulate("convdiff", grid="20x24", steps=8, trajectories=3, noise=1e-3, progress=False)
    truth = {"u_x": 0.6, "u_y": 0.8, "u_xx": 0.3, "u_yy": 0.2}
    result = fit(data, iterations=5, progress=False)
    assert _terms(result) == {"u": set(truth)}
    for term, c in truth.items():
        assert result.equations["u"][term] == pytest.approx(c, rel=1e-2), term
    # without the penalty and pruning, the other terms come out small by themselves (noise 1e-3)
    loose = fit(data, iterations=0, threshold=0.0, l1=0.0, progress=False)
    others = {t: c for t, c in loose.equations["u"].items() if t not in truth}
    assert set(others) == {"u", "u_xy"} and max(abs(c) for c in others.values()) < 5e-3


@pytest.mark.parametrize(
    "grid, params, term", [("16x28", dict(a=1.0, b=0.0), "u_x"), ("28x16", dict(a=0.0, b=1.0), "u_y")]
)
def test_fit_orientation_on_non_square_grids(grid, params, term):
    data = simulate("convdiff", grid=grid, steps=6, trajectories=3, params=dict(params, c=0.0, d=0.0), progress=False)
    result = fit(data, iterations=3, progress=False)
    assert set(result.equations["u"]) == {term}
    assert result.equations["u"][term] == pytest.approx(1.0, rel=1e-3)


def test_fit_neumann_data_uses_padding_and_ignores_the_border():
    # u = Σ a_mn cos(mπx/L) cos(nπy/L') decays as exp(−κ((mπ/L)² + (nπ/L')²)t); reflect padding mirrors it exactly
    H, W, h, kappa = 18, 22, 0.25, 0.1
    x, y = np.arange(W) * h, np.arange(H) * h
    rng = np.random.default_rng(0)
    t = 0.02 * np.arange(9)
    u = np.zeros((3, len(t), 1, H, W))
    for m in range(3):
        for n in range(3):
            km, kn = m * np.pi / x[-1], n * np.pi / y[-1]
            a = rng.standard_normal((3, 1, 1, 1, 1))
            mode = np.cos(kn * y)[:, None] * np.cos(km * x)[None, :]
            u += a * np.exp(-kappa * (km**2 + kn**2) * t)[None, :, None, None, None] * mode
    result = fit(Dataset(u, 0.02, h, h, "neumann"), kernel_size=7, iterations=3, progress=False)
    assert _terms(result) == {"u": {"u_xx", "u_yy"}}
    for term in ("u_xx", "u_yy"):
        assert result.equations["u"][term] == pytest.approx(kappa, rel=1e-2)


def test_variable_fit_of_constant_data_prunes_the_variation():
    data = simulate("heat", grid="16x20", steps=8, trajectories=2, progress=False)
    result = fit(data, coefficients="variable", degree=2, iterations=2, progress=False)
    assert _terms(result) == {"u": {"u_xx", "u_yy"}}
    assert result.model.mask[..., 1:].sum() == 0  # only the constant part of each field survived
    np.testing.assert_allclose(result.fields[0, :2], 0.2, rtol=1e-2)


def test_data_that_do_not_move_give_u_t_equal_zero():
    u = 1 + np.random.default_rng(0).standard_normal((3, 1, 1, 12, 12)).repeat(6, axis=1)
    result = fit(Dataset(u, 0.1, 0.5, 0.5), kernel_size=7, iterations=2, progress=False)
    assert result.equations == {"u": {}} and np.all(result.error == 0)


# -------------------------------------------------------------------------------------------------- files and CLI


def test_cli_simulate_fit_and_pde_json(tmp_path, capsys):
    data = tmp_path / "cd.npz"
    assert cli.main(["discover", "simulate", "--pde", "convdiff", "--out", str(data), "--grid", "20x24",
                     "--steps", "6", "--trajectories", "3", "--param", "a=0.5", "--no-progress"]) == 0
    d = load(data)
    assert d.u.shape == (3, 7, 1, 20, 24) and d.bc == "periodic"
    out = tmp_path / "fit"
    assert cli.main(["discover", "fit", str(data), "--out", str(out), "--iterations", "2", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "u_t = 0.5" in printed and str(out / "pde.json") in printed
    pde = json.loads((out / "pde.json").read_text())
    assert set(pde["equations"]) == {"u"} and set(pde["equations"]["u"]) == {"terms"}
    assert pde["equations"]["u"]["terms"]["u_x"] == pytest.approx(0.5, rel=1e-2)
    assert pde["grid"] == {"H": 20, "W": 24, "dx": d.dx, "dy": d.dy, "dt": d.dt, "bc": "periodic"}
    assert len(pde["prediction_error"]["relative_l2"]) == 7
    for name in ("report.md", "snapshots.png", "error.png"):
        assert (out / name).stat().st_size > 0
    assert "u_t = 0.5" in (out / "report.md").read_text()


def test_variable_fields_file(tmp_path):
    data = simulate("heat", grid="16x20", steps=6, trajectories=2, progress=False)
    path = save(data, tmp_path / "heat.npz")
    out = tmp_path / "fit"
    assert cli.main(["discover", "fit", path, "--out", str(out), "--coefficients", "variable", "--degree", "2",
                     "--iterations", "0", "--no-progress"]) == 0
    pde = json.loads((out / "pde.json").read_text())
    assert pde["fields"] == "fields.npz" and pde["equations"]["u"]["variable"] == []
    with np.load(out / "fields.npz") as f:
        assert f["fields"].shape == (1, len(f["terms"]), 16, 20) and list(f["equations"]) == ["u"]
        np.testing.assert_allclose(f["x"], np.arange(20) * data.dx)


def _write(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


GOOD = dict(u=np.zeros((4, 6, 8)), dt=0.1, dx=0.5)
WITH_NAN = np.zeros((4, 6, 8))
WITH_NAN[2, 3, 4] = np.nan
MALFORMED = {
    "missing u": (dict(dt=0.1, dx=0.5), "has no array 'u'"),
    "wrong rank": (dict(GOOD, u=np.zeros(8)), "has rank 1"),  # rank 2 is (T, W), 1-D (space_dims 1)
    "NaN": (dict(GOOD, u=WITH_NAN), "1 NaN or infinite"),
    "zero dt": (dict(GOOD, dt=0.0), "dt must be a positive number"),
    "negative dx": (dict(GOOD, dx=-1.0), "dx must be a positive number"),
    "too few frames": (dict(GOOD, u=np.zeros((2, 6, 8))), "at least 3 frames"),
    "bad bc": (dict(GOOD, bc="robin"), "valid ones: dirichlet"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_npz_is_a_clear_error_and_exit_code_2(case, tmp_path, capsys):
    arrays, message = MALFORMED[case]
    path = _write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        load(path)
    assert cli.main(["discover", "fit", path, "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_good_npz_variants_load(tmp_path):
    d = load(_write(tmp_path / "a.npz", **GOOD))
    assert d.u.shape == (1, 4, 1, 6, 8) and d.dy == d.dx == 0.5 and d.components == ("u",)
    u = np.zeros((2, 3, 2, 6, 8), dtype=np.float32)
    d = load(_write(tmp_path / "b.npz", u=u, dt=1, dx=0.5, dy=0.25, bc="neumann", components=np.array(["p", "q"])))
    assert d.u.dtype == np.float64 and d.components == ("p", "q") and d.dy == 0.25 and d.bc == "neumann"
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.npz")


# -------------------------------------------------------------------------------------------------- benchmark


def test_benchmark_quick_runs(tmp_path):
    results = tmp_path / "discover.jsonl"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "discover.py"), "--quick", "--no-progress",
         "--results", str(results)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| setting | term |" in proc.stdout
    record = json.loads(results.read_text().splitlines()[-1])
    assert record["quick"] and [r["setting"] for r in record["results"]] == ["burgers", "convdiff", "convdiff-variable"]
    # the true terms of each PDE (PDE-Net's Burgers and convection–diffusion), each scored
    burgers = {"u:u*u_x", "u:v*u_y", "u:u_xx", "u:u_yy", "v:u*v_x", "v:v*v_y", "v:v_xx", "v:v_yy"}
    convdiff = {"u:u_x", "u:u_y", "u:u_xx", "u:u_yy"}
    truth = {"burgers": burgers, "convdiff": convdiff, "convdiff-variable": convdiff}
    # bounds the smoke run meets with margin ≥ 2 (16² grids, 2 iterations; measured 0.44 / 0.011 / 0.23 and
    # largest spurious 0.093 / 0 / 1.1): a dropped term scores 1, a sign error 2, so any of those fails
    worst = {"burgers": 0.75, "convdiff": 0.05, "convdiff-variable": 0.5}
    spurious = {"burgers": 0.2, "convdiff": 1e-6, "convdiff-variable": 2.5}
    for r in record["results"]:
        name = r["setting"]
        assert set(r["coefficient_error"]) == truth[name], name
        for key in truth[name]:  # every true term is kept in its equation
            e, term = key.split(":")
            assert term in r["equations"][e], (name, key)
        assert r["worst_coefficient_error"] == max(r["coefficient_error"].values())
        assert 0 <= r["worst_coefficient_error"] < worst[name], (name, r["coefficient_error"])
        assert 0 <= r["largest_spurious"] < spurious[name], (name, r["largest_spurious"])


def test_a_fit_says_how_much_of_u_t_it_explains_and_warns_on_noise(tmp_path, capsys):
    from pdeconv.cli import main

    rng = np.random.default_rng(0)  # random integers: no PDE behind them
    np.savez(tmp_path / "noise.npz", u=rng.integers(0, 100, (2, 12, 16, 16)).astype(np.float64), dt=0.1, dx=1.0,
             dy=1.0, bc="periodic")
    # it explains < 10% of u_t: the fit has failed, status 3, with the likely causes on one line
    assert main(["discover", "fit", str(tmp_path / "noise.npz"), "--out", str(tmp_path / "n"), "--kernel-size", "5",
                 "--iterations", "2", "--no-progress"]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "error: the recovered PDE explains only" in err and "below 10%" in err and "likely causes: (1)" in err
    report = (tmp_path / "n" / "report.md").read_text()
    assert "**Warning:** the recovered PDE explains only" in report
    assert json.loads((tmp_path / "n" / "pde.json").read_text())["explained_share"] < 0.1
    # a clean simulation is explained almost entirely, without a warning
    data = simulate("heat", grid=16, steps=12, trajectories=2, seed=0)
    result = fit(data, kernel_size=5, iterations=2, progress=False)
    assert result.explained > 0.99 and result.warning is None


def test_files_that_are_not_npz_get_a_message_that_says_what_to_do(tmp_path):
    import pickle

    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "obj.pkl").write_bytes(pickle.dumps({"u": [1, 2]}))
    for name, says in (("notes.txt", "neither an .npz archive nor an .npy array"), ("obj.pkl", "is a pickle")):
        with pytest.raises(ValueError) as info:
            load(tmp_path / name)
        message = str(info.value)
        assert says in message and "numpy.savez(path, u=..." in message and "allow_pickle" not in message


# ------------------------------------------------------------------------------------- the refit's optimiser


class _Vector(torch.nn.Module):
    def __init__(self, start):
        super().__init__()
        self.p = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))


def _least_squares(model, A, b, counter, scale=1.0):
    def loss():
        counter.append(1)
        return scale * (A @ model.p - b).square().sum() / b.square().sum()

    return loss


def test_refit_solves_a_least_squares_problem_to_the_floor():
    from pdeconv.discover.refit import REFIT_FLOOR, _lbfgs

    gen = torch.Generator().manual_seed(0)
    A = torch.randn(40, 5, generator=gen, dtype=torch.float64)
    truth = torch.tensor([1.0, -0.5, 0.25, 2.0, 0.1], dtype=torch.float64)
    model, calls = _Vector([0.9, -0.45, 0.3, 1.9, 0.0]), []
    loss = _lbfgs(model, _least_squares(model, A, A @ truth, calls), iterations=50, progress=False)
    assert loss <= REFIT_FLOOR  # a consistent system: stopped at the floor, not at the iteration limit
    torch.testing.assert_close(model.p.detach(), truth, rtol=0, atol=1e-5)  # √1e-12 relative to |b|
    assert len(calls) < 100


@pytest.mark.parametrize("scale", [1e-2, 1e-9])
def test_refit_stops_once_gains_stall_at_any_loss_scale(scale):
    """An inconsistent system whose start is already at its minimum but for 1e-4 of the loss: the refit stops
    after a few iterations, whether the loss is of order 1e-2 or 1e-9 (a relative rule), far below its budget."""
    from pdeconv.discover.refit import REFIT_PATIENCE, _lbfgs

    gen = torch.Generator().manual_seed(1)
    A = torch.randn(40, 4, generator=gen, dtype=torch.float64)
    b = torch.randn(40, generator=gen, dtype=torch.float64)
    best = torch.linalg.lstsq(A, b).solution
    model, calls = _Vector((best * 1.003).tolist()), []
    start = float(_least_squares(model, A, b, [], scale)().detach())
    loss = _lbfgs(model, _least_squares(model, A, b, calls, scale), iterations=50, progress=False)
    assert loss <= start and loss == pytest.approx(float(_least_squares(model, A, b, [], scale)().detach()), rel=1e-12)
    assert len(calls) <= 2 * (REFIT_PATIENCE + 2)  # ≤ 2 evaluations an iteration here


def test_refit_restores_the_start_unless_it_gains_enough():
    from pdeconv.discover.refit import REFIT_STALL, _lbfgs

    gen = torch.Generator().manual_seed(2)
    A = torch.randn(40, 4, generator=gen, dtype=torch.float64)
    b = torch.randn(40, generator=gen, dtype=torch.float64)
    best = torch.linalg.lstsq(A, b).solution
    model = _Vector((best + 0.05).tolist())
    objective = _least_squares(model, A, b, [])
    start, first = model.p.detach().clone(), float(objective().detach())
    minimum = float((A @ best - b).square().sum() / b.square().sum())
    assert minimum > 0.5 * first  # the start is within a factor 2 of the best possible
    assert _lbfgs(model, objective, iterations=50, progress=False, keep_below=0.5) == first
    assert torch.equal(model.p.detach(), start)
    # without the demand it keeps what it found: the minimum, to within the last iteration's gain (< 1%)
    kept = _lbfgs(model, objective, iterations=50, progress=False)
    assert minimum * (1 - 1e-12) <= kept <= minimum * (1 + REFIT_STALL) and kept < first  # lstsq rounds too


def test_refit_steps_back_from_a_blow_up():
    """Trial steps whose loss is not finite (a rollout that blew up) are refused; the fit still converges."""
    from pdeconv.discover.refit import _lbfgs

    model = _Vector([0.5])

    def loss():
        p = model.p[0]
        return (p - 1.0).square() + 1e-3 if float(p.detach()) < 1.2 else p * float("inf")

    assert _lbfgs(model, loss, iterations=50, progress=False) == pytest.approx(1e-3, rel=1e-6)
    assert float(model.p.detach()) == pytest.approx(1.0, abs=1e-3)


def test_refit_of_a_perfect_fit_changes_nothing():
    from pdeconv.discover.refit import _lbfgs

    model = _Vector([1.0, 2.0])
    assert _lbfgs(model, lambda: (model.p - torch.tensor([1.0, 2.0], dtype=torch.float64)).square().sum(),
                  iterations=50, progress=False) == 0.0
    assert model.p.detach().tolist() == [1.0, 2.0]
