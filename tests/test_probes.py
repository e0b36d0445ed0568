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
    u = probes.rotation._blobs(4, size, torch.Generator().manual_seed(0))
    # four quarter turns are the identity (bilinear resampling at exact quarter turns moves whole pixels)
    back = u
    for _ in range(4):
        back = probes.rotation._rotate(back, math.pi / 2)
    torch.testing.assert_close(back, u, rtol=0, atol=1e-5)
    # the blobs stay inside the central disc, so a turn loses no mass
    turned = probes.rotation._rotate(u, probes.rotation._ROTATION_ANGLE)
    torch.testing.assert_close(turned.sum((1, 2, 3)), u.sum((1, 2, 3)), rtol=2e-3, atol=0)
    # the flow v = (−y, x) carries a blob right of the centre, (x, y) = (0.5, 0), down the rows to (0, 0.5)
    c = (2 * torch.arange(size) + 1) / size - 1
    y, x = c[:, None], c[None, :]
    blob = torch.exp(-((x - 0.5) ** 2 + y**2) / (2 * 0.1**2))[None, None]
    moved = probes.rotation._rotate(blob, math.pi / 2)[0, 0]
    centre = (float((moved * x).sum() / moved.sum()), float((moved * y).sum() / moved.sum()))
    assert centre == pytest.approx((0.0, 0.5), abs=0.02)


def test_a_hand_built_rotation_net_aligns_perfectly_and_a_constant_one_not_at_all():
    size = 32
    net = nn.Sequential(probes.rotation._PDELayer(2, 1), probes.rotation._PDELayer(2, 1))
    with torch.no_grad():
        for layer in net:
            layer.conv.weight.zero_()
            layer.conv.weight[0, 0] = stencil.dx(dtype=torch.float32)  # operator 0: ∂x, times the field y
            layer.conv.weight[1, 0] = stencil.dy(dtype=torch.float32)  # operator 1: ∂y, times the field −x
            layer.fields.weight.zero_()  # monomials 1, x, y
            layer.fields.weight[0, 2] = 0.3
            layer.fields.weight[1, 1] = -0.3
    assert probes.rotation._velocity_alignment(net, size) == pytest.approx(1.0, abs=1e-6)
    constant = nn.Sequential(probes.rotation._PDELayer(2, 0))
    assert probes.rotation._velocity_alignment(constant, size) == pytest.approx(0.0, abs=1e-6)  # a constant field


def test_bars_cross_one_border_with_two_or_three_pixels_inside_and_the_right_orientation():
    size = 24
    images, labels = probes.boundary._bars(200, size, torch.Generator().manual_seed(1), noise=0.0)
    again, _ = probes.boundary._bars(200, size, torch.Generator().manual_seed(1), noise=0.0)
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
    held, text = probes.rotation._rotation_verdict({"constant": [0.9, 0.8], "variable": [0.05, 0.1]},
                                          {"variable": {"velocity_alignment": [0.95, 0.97]}})
    assert held and "0.850" in text
    assert not probes.rotation._rotation_verdict({"constant": [0.9], "variable": [0.5]},
                                        {"variable": {"velocity_alignment": [0.95]}})[0]
    shifts, depths = probes.transport._SHIFTS, probes.transport._DEPTHS
    cells = {f"shift {k}, {d} layers": [0.0 if d >= k else 1.0] * 2 for k in shifts for d in depths}
    assert probes.transport._transport_verdict(cells, {})[0]
    cells["shift 1, 4 layers"] = [0.05, 0.06]  # a reachable shift not found
    assert not probes.transport._transport_verdict(cells, {})[0]
    assert probes.boundary._boundary_verdict({"dirichlet": [0.90, 0.91, 0.92], "neumann": [0.93, 0.95, 0.96]}, {})[0]
    held, verdict = probes.boundary._boundary_verdict({"dirichlet": [0.90, 0.95, 0.92],
                                                       "neumann": [0.93, 0.91, 0.93]}, {})
    assert not held and "the interval includes 0, so not resolved either way" in verdict


def test_probe_cli_quick_writes_the_prediction_first_and_the_outcome(tmp_path, capsys):
    out = tmp_path / "probe"
    assert main(["probe", "boundary", "--seeds", "2", "--quick", "--out", str(out), "--no-progress",
                 "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("prediction: When the answer lies in pixels at the border")
    assert "outcome (--quick: a smoke test, not a result): the prediction" in printed
    record = json.loads((out / "probe.json").read_text())
    assert record["quick"] and record["seeds"] == [0, 1] and set(record["metrics"]) == {"dirichlet", "neumann"}
    report = (out / "report.md").read_text()
    assert report.index("**Prediction**") < report.index("| arm |") < report.index("**Outcome")
    assert "smoke test, not a result" in report and "![boundary](probe.png)" in report
    assert (out / "probe.png").stat().st_size > 0
    assert (out / "results.csv").read_text().splitlines()[0] == "arm,seed,test_accuracy"
    assert main(["probe", "boundary", "--seeds", "1", "--out", str(tmp_path / "x")]) == 2
    assert "at least 2" in capsys.readouterr().err


def test_truncate_model_reaches_every_3x3_kernel_and_nothing_else():
    from pdeconv.layers import DifferentialConv2d

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), DifferentialConv2d(4, 4), DifferentialConv2d(4, 2, order=2),
                          nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3, padding=1, groups=4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert probes.truncate_model(model, 4) == 4  # order 4 is all of a 3×3 kernel: nothing changes
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=1e-6, atol=1e-6)
    probes.truncate_model(model, 2)
    order = torch.arange(3)[:, None] + torch.arange(3)[None, :]
    for kernel in (model[0].weight, model[1].weight[:, 0], model[4].weight):
        assert float(stencil.moments(kernel.detach().double())[..., order > 2].abs().max()) < 1e-5
    torch.testing.assert_close(model[2].coefficients, before["2.coefficients"])  # order 2 already
    assert torch.equal(model[3].weight, before["3.weight"])  # 1×1: no spatial operator to truncate
    probes.truncate_model(model, 1)
    kept = [a + b <= 1 for a, b in stencil.multi_indices(2, size=3)]
    assert torch.all(model[2].coefficients[:, [not k for k in kept]] == 0)
    torch.testing.assert_close(model[2].coefficients[:, kept], before["2.coefficients"][:, kept])


def test_truncation_probe_on_trained_runs(tmp_path, make_fashion_mnist, capsys):
    from pdeconv import engine, run

    folder = make_fashion_mnist(tmp_path / "fm", 64, 32)
    runs = []
    for seed in (0, 1):
        out = tmp_path / f"seed{seed}"
        run.train(run.make_config(variant="dw4", epochs=1, batch_size=32, data_dir=str(folder), out=str(out),
                                  seed=seed, progress=False, threads="1"))
        runs.append(str(out))
    capsys.readouterr()
    assert main(["probe", "truncation", "--runs", *runs, "--out", str(tmp_path / "probe"), "--no-progress",
                 "--threads", "1"]) == 0
    assert capsys.readouterr().out.startswith("prediction: The essay's first sentence")
    record = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert record["seeds"] == {"dw4": [0, 1]} and list(record["metrics"]["dw4"]) == [
        "order ≤ 4", "order ≤ 3", "order ≤ 2", "order ≤ 1"]
    # order ≤ 4 is the trained model itself, BatchNorm recalibrated: its accuracy is the model's under that
    from pdeconv import data

    model = run.model_from_run(runs[0])
    train, test, _ = data.build_loaders("fashion-mnist", data_dir=str(folder), batch_size=64, seed=0)
    probes.trained._recalibrate(model, [x for x, _ in train])
    assert record["metrics"]["dw4"]["order ≤ 4"][0] == engine.evaluate(model, test)["test_acc"]
    assert (tmp_path / "probe" / "probe.png").stat().st_size > 0
    assert main(["probe", "rotation", "--runs", runs[0], "--out", str(tmp_path / "x")]) == 2
    assert "--runs goes only with a probe of trained runs" in capsys.readouterr().err
    assert main(["probe", "truncation", "--out", str(tmp_path / "y")]) == 2
    assert "the truncation probe needs --runs DIR" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


def test_a_probe_plot_joins_each_seeds_arms_and_marks_each_arms_mean(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    metrics = {"dirichlet": {"test_accuracy": [0.9, 0.8, 0.95]}, "neumann": {"test_accuracy": [0.92, 0.85, 0.94]}}
    (tmp_path / "probe.json").write_text(json.dumps({"probe": "boundary", "metrics": metrics}))
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to read what was drawn
    assert probes.plot_probe(tmp_path) == tmp_path / "probe.png" and (tmp_path / "probe.png").stat().st_size > 0
    lines = figures[0].axes[0].lines
    joined = [list(line.get_ydata()) for line in lines if line.get_linestyle() == "-"]
    assert joined == [[0.9, 0.92], [0.8, 0.85], [0.95, 0.94]]  # seed s: (dirichlet, neumann)
    means = [line.get_ydata()[0] for line in lines if line.get_marker() == "s"]
    assert means == pytest.approx([0.8833333, 0.9033333])
    # transport: the cells (k, L) at their places, k down the rows and L along the columns
    arms = {f"shift {k}, {d} layers": {"relative_error": [10.0 * k + d]} for k in (1, 2) for d in (1, 2, 3)}
    (tmp_path / "probe.json").write_text(json.dumps({"probe": "transport", "metrics": arms}))
    probes.plot_probe(tmp_path)
    image = figures[1].axes[0].images[0].get_array()
    assert image.shape == (2, 3) and 10 ** image[1, 0] == pytest.approx(21) and 10 ** image[0, 2] == pytest.approx(13)
