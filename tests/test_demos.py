"""The demos run fast, write their files and measure what they promise (their ``metrics``)."""

import math

import pytest
import torch
from PIL import Image

from pdeconv import demos
from pdeconv.cli import main


@pytest.fixture(autouse=True)
def same_picture_everywhere(monkeypatch):
    """The demos draw a Fashion-MNIST item where the data is installed; the tests use the drawn word on every
    machine, so their thresholds see one picture."""
    monkeypatch.setattr(demos, "_fashion_mnist_item", lambda: None)


@pytest.mark.parametrize("name", ["translation", "heat", "boundary", "rotation", "dilation"])
def test_demo_cli_writes_files(name, tmp_path, capsys):
    assert main(["demo", name, "--out", str(tmp_path), "--size", "24", "--steps", "6"]) == 0
    printed = capsys.readouterr().out
    for ext in ("gif", "png"):
        f = tmp_path / f"{name}.{ext}"
        assert str(f) in printed
        with Image.open(f) as image:
            image.load()  # decodes: a whole file, not a stub
            if ext == "gif":  # the start and one frame per layer (step)
                assert image.n_frames == 6 + 1


def test_translation_upwind_is_an_exact_shift(tmp_path):
    m = demos.translation(tmp_path, size=20, steps=5).metrics
    assert m["upwind_shift"] == pytest.approx(1.0, abs=1e-9) and m["upwind_centroid"] == pytest.approx(1.0, abs=1e-9)
    assert m["upwind_error"] < 1e-12
    # the mean moves at c·Δt = ½ even though central differences disperse the picture
    assert m["sobel_centroid"] == pytest.approx(0.5, abs=0.01) and m["sobel_exact"] == 0.5
    assert m["sobel_error"] > 0.1


def test_shift_measurement_on_a_known_shift():
    torch.manual_seed(0)
    u0 = torch.zeros(6, 40, dtype=torch.float64)
    u0[:, 10:14] = torch.rand(6, 4, dtype=torch.float64) + 1
    assert demos._measured_shift(torch.roll(u0, 7, dims=1), u0) == pytest.approx(7, abs=1e-9)
    assert demos._measured_shift(demos._shift_exactly(u0, -3.0), u0) == pytest.approx(-3, abs=1e-6)


def test_heat_converges_at_second_order(tmp_path):
    m = demos.heat(tmp_path, size=16, steps=2).metrics
    assert 1.8 < m["order"] < 2.2 and m["order"] == pytest.approx(math.log2(m["error"] / m["error_fine"]))
    e1, *_ = demos._heat_error(16, 0.1)
    assert m["error"] == e1


def test_boundary_conditions_behave_as_named(tmp_path):
    m = demos.boundary(tmp_path, size=32, steps=40).metrics
    # leapfrog with the 5-point Laplacian on a torus: Σ Δu = 0 exactly, so Σu stays at its start value
    assert m["periodic_sum"] == pytest.approx(m["start_sum"], rel=1e-12)
    # after the pulse has met the walls: zero padding sends it back with its sign flipped, so the total turns
    # negative; the mirror sends it back upright and keeps the total near its start (to 10% at 40 steps)
    assert m["dirichlet_sum"] < 0 < m["neumann_sum"]
    assert m["neumann_sum"] == pytest.approx(m["start_sum"], rel=0.1)


def test_unknown_demo_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "nope"])
    assert e.value.code == 2
    assert main(["demo", "heat", "--size", "4"]) == 2
    assert "at least 8" in capsys.readouterr().err


def test_rotation_turns_a_quarter(tmp_path):
    m = demos.rotation(tmp_path, size=32, steps=24).metrics
    assert m["corr_rotated"] > m["corr_original"] + 0.3
    assert m["angle"] == pytest.approx(m["exact_angle"], abs=4)
    assert (tmp_path / "rotation.gif").exists()


def test_best_angle_finds_a_known_rotation():
    u0 = demos._disc_image(24)
    assert demos._best_angle(demos._rotate(u0, 1.2), u0, guess=1.0) == pytest.approx(1.2, abs=1e-5)


def test_rotation_direction_matches_rot90_clockwise():
    u0 = demos._disc_image(24)
    assert torch.allclose(demos._rotate(u0, math.pi / 2), torch.rot90(u0, -1, dims=(-2, -1)), atol=1e-12)


def test_dilation_scale_within_5_percent(tmp_path):
    m = demos.dilation(tmp_path, size=32, steps=10).metrics
    assert m["scale"] == pytest.approx(m["exact_scale"], rel=0.05)
    assert m["scale_per_layer"] == pytest.approx(m["exact_per_layer"], rel=0.005)
