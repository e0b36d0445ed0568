"""pdeconv.probes: the probes' data, their oracles, their verdicts, and `pdeconv probe` end to end (quick)."""

import json
import math

import pytest
import torch
from torch import nn

from pdeconv import probes, stencil
from pdeconv.cli import main


def test_rotation_target_turns_the_picture_as_the_flow_y_minus_x_carries_it():
    size = 32
    u = probes._blobs(4, size, torch.Generator().manual_seed(0))
    # four quarter turns are the identity (bilinear resampling at exact quarter turns moves whole pixels)
    back = u
    for _ in range(4):
        back = probes._rotate(back, math.pi / 2)
    torch.testing.assert_close(back, u, rtol=0, atol=1e-5)
    # the blobs stay inside the central disc, so a turn loses no mass
    turned = probes._rotate(u, probes._ROTATION_ANGLE)
    torch.testing.assert_close(turned.sum((1, 2, 3)), u.sum((1, 2, 3)), rtol=2e-3, atol=0)
    # the flow v = (−y, x) carries a blob right of the centre, (x, y) = (0.5, 0), down the rows to (0, 0.5)
    c = (2 * torch.arange(size) + 1) / size - 1
    y, x = c[:, None], c[None, :]
    blob = torch.exp(-((x - 0.5) ** 2 + y**2) / (2 * 0.1**2))[None, None]
    moved = probes._rotate(blob, math.pi / 2)[0, 0]
    centre = (float((moved * x).sum() / moved.sum()), float((moved * y).sum() / moved.sum()))
    assert centre == pytest.approx((0.0, 0.5), abs=0.02)


def test_a_hand_built_rotation_net_aligns_perfectly_and_a_constant_one_not_at_all():
    size = 32
    net = nn.Sequential(probes._PDELayer(2, 1), probes._PDELayer(2, 1))
    with torch.no_grad():
        for layer in net:
            layer.conv.weight.zero_()
            layer.conv.weight[0, 0] = stencil.dx(dtype=torch.float32)  # operator 0: ∂x, times the field y
            layer.conv.weight[1, 0] = stencil.dy(dtype=torch.float32)  # operator 1: ∂y, times the field −x
            layer.fields.weight.zero_()  # monomials 1, x, y
            layer.fields.weight[0, 2] = 0.3
            layer.fields.weight[1, 1] = -0.3
    assert probes._velocity_alignment(net, size) == pytest.approx(1.0, abs=1e-6)
    constant = nn.Sequential(probes._PDELayer(2, 0))
    assert probes._velocity_alignment(constant, size) == pytest.approx(0.0, abs=1e-6)  # a constant field


def test_bars_cross_one_border_with_two_or_three_pixels_inside_and_the_right_orientation():
    size = 24
    images, labels = probes._bars(200, size, torch.Generator().manual_seed(1), noise=0.0)
    again, _ = probes._bars(200, size, torch.Generator().manual_seed(1), noise=0.0)
    assert torch.equal(images, again) and labels.unique().numel() == 4  # seeded: the same data again
    directions = ((0, 1), (1, 1), (1, 0), (1, -1))  # (dy, dx) per label
    for image, label in zip(images, labels):
        pixels = sorted(map(tuple, (image[0] == 1.5).nonzero().tolist()))
        assert len(pixels) in (2, 3) and int((image[0] != 0).sum()) == len(pixels)
        dy, dx = directions[int(label)]
        steps = {(b[0] - a[0], b[1] - a[1]) for a, b in zip(pixels, pixels[1:])}
        assert steps <= {(dy, dx), (-dy, -dx)}, (int(label), pixels)  # one straight run, the class's direction
        end = pixels[0] if pixels[0][0] in (0, size - 1) or pixels[0][1] in (0, size - 1) else pixels[-1]
        assert end[0] in (0, size - 1) or end[1] in (0, size - 1)  # it runs out through a border


def test_verdicts_say_whether_the_prediction_held():
    held, text = probes._rotation_verdict({"constant": [0.9, 0.8], "variable": [0.05, 0.1]},
                                          {"variable": {"velocity_alignment": [0.95, 0.97]}})
    assert held and "0.850" in text
    assert not probes._rotation_verdict({"constant": [0.9], "variable": [0.5]},
                                        {"variable": {"velocity_alignment": [0.95]}})[0]
    cells = {f"shift {k}, {d} layers": [0.0 if d >= k else 1.0] * 2 for k in probes._SHIFTS for d in probes._DEPTHS}
    assert probes._transport_verdict(cells, {})[0]
    cells["shift 1, 4 layers"] = [0.05, 0.06]  # a reachable shift not found
    assert not probes._transport_verdict(cells, {})[0]
    assert probes._boundary_verdict({"dirichlet": [0.90, 0.91, 0.92], "neumann": [0.93, 0.95, 0.96]}, {})[0]
    assert not probes._boundary_verdict({"dirichlet": [0.90, 0.95, 0.92], "neumann": [0.93, 0.91, 0.93]}, {})[0]


def test_probe_cli_quick_writes_the_prediction_first_and_the_outcome(tmp_path, capsys):
    out = tmp_path / "probe"
    assert main(["probe", "boundary", "--seeds", "2", "--quick", "--out", str(out), "--no-progress",
                 "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("prediction: When the answer lies in pixels at the border")
    assert "outcome: the prediction" in printed
    record = json.loads((out / "probe.json").read_text())
    assert record["quick"] and record["seeds"] == [0, 1] and set(record["metrics"]) == {"dirichlet", "neumann"}
    report = (out / "report.md").read_text()
    assert report.index("**Prediction**") < report.index("| arm |") < report.index("**Outcome")
    assert "smoke test, not a result" in report
    assert (out / "results.csv").read_text().splitlines()[0] == "arm,seed,test_accuracy"
    assert main(["probe", "boundary", "--seeds", "1", "--out", str(tmp_path / "x")]) == 2
    assert "at least 2" in capsys.readouterr().err
