"""The demos run fast, write their files and measure what they promise."""

import math
import re

import pytest
import torch

from pdeconv import demos
from pdeconv.cli import main


@pytest.mark.parametrize("name", ["translation", "heat", "boundary", "rotation", "dilation"])
def test_demo_cli_writes_files(name, tmp_path, capsys):
    assert main(["demo", name, "--out", str(tmp_path), "--size", "24", "--steps", "6"]) == 0
    printed = capsys.readouterr().out
    for ext in ("gif", "png"):
        f = tmp_path / f"{name}.{ext}"
        assert f.stat().st_size > 0 and str(f) in printed


def _number_after(text: str, key: str) -> float:
    return float(re.search(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?", text.split(key)[1]).group())


def test_translation_upwind_is_an_exact_shift(tmp_path):
    res = demos.translation(tmp_path, size=20, steps=5)
    upwind, sobel = res.summary.splitlines()
    assert _number_after(upwind, "correlation peak") == 1.0 and _number_after(upwind, "centroid") == 1.0
    assert _number_after(upwind, "shifted image") < 1e-12
    # the mean moves at c·Δt = ½ even though central differences disperse the picture
    assert _number_after(sobel, "centroid") == pytest.approx(0.5, abs=0.01)
    assert _number_after(sobel, "shifted image") > 0.1


def test_shift_measurement_on_a_known_shift():
    torch.manual_seed(0)
    u0 = torch.zeros(6, 40, dtype=torch.float64)
    u0[:, 10:14] = torch.rand(6, 4, dtype=torch.float64) + 1
    assert demos._measured_shift(torch.roll(u0, 7, dims=1), u0) == pytest.approx(7, abs=1e-9)
    assert demos._measured_shift(demos._shift_exactly(u0, -3.0), u0) == pytest.approx(-3, abs=1e-6)


def test_heat_converges_at_second_order():
    e1, *_ = demos._heat_error(16, 0.1)
    e2, *_ = demos._heat_error(32, 0.1)
    assert 1.8 < math.log2(e1 / e2) < 2.2


def test_boundary_conditions_behave_as_named(tmp_path):
    lines = demos.boundary(tmp_path, size=32, steps=40).summary.splitlines()
    sums = {line.split()[0]: float(line.split("Σu =")[1].split()[0]) for line in lines}
    start = float(lines[0].split("start ")[1].split(")")[0])
    assert sums["periodic"] == pytest.approx(start, rel=1e-9)  # nothing leaves a torus
    assert sums["dirichlet"] < sums["neumann"]  # zero padding absorbs and inverts


def test_unknown_demo_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "nope"])
    assert e.value.code == 2
    assert main(["demo", "heat", "--size", "4"]) == 2
    assert "at least 8" in capsys.readouterr().err


def test_rotation_turns_a_quarter(tmp_path):
    summary = demos.rotation(tmp_path, size=32, steps=24).summary
    rotated, original = _number_after(summary, "rotated picture"), _number_after(summary, "the original")
    assert rotated > original + 0.3
    assert _number_after(summary, "total") == pytest.approx(90, abs=4)
    assert (tmp_path / "rotation.gif").exists()


def test_rotation_direction_matches_rot90_clockwise():
    u0 = demos._disc_image(24)
    assert torch.allclose(demos._rotate(u0, math.pi / 2), torch.rot90(u0, -1, dims=(-2, -1)), atol=1e-12)


def test_dilation_scale_within_5_percent(tmp_path):
    summary = demos.dilation(tmp_path, size=32, steps=10).summary
    assert _number_after(summary, "error") < 5.0
    assert _number_after(summary, "exact e^Δt =") > 1.0
