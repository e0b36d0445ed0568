"""benchmarks/: each script runs end to end at smoke size and appends one well-formed JSON line."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _smoke(script: str, tmp_path: Path, *extra: str) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    results = tmp_path / f"{script}.jsonl"
    cmd = [sys.executable, str(BENCHMARKS / f"{script}.py"), "--smoke", "--threads", "1", "--device", "cpu",
           "--results", str(results), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = results.read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["benchmark"] == script and record["device"] == "cpu" and record["settings"]["smoke"]
    assert "--smoke" in record["command"] and record["machine"]["threads"] == 1
    assert {"platform", "cpu_count", "torch", "gpu"} <= set(record["machine"])
    assert record["date"].endswith("+00:00")
    return {"record": record, "stdout": done.stdout}


def _ratio_from_rounds(rows: list[dict], reference: dict) -> None:
    """Each row's time ratio is the median over rounds of its time / the reference's time in the same round."""
    for r in rows:
        per_round = [a / b for a, b in zip(r["round_ms"], reference["round_ms"])]
        assert len(per_round) == len(reference["round_ms"]) >= 1
        assert r["time_ratio"] == pytest.approx(statistics.median(per_round), rel=1e-12)


# Forward FLOPs of the smoke blocks, counted by hand (2 per multiply-add, batch 2, 6×6 pixels = 36):
# small suite, BasicBlock 8 → 8: torchvision two 3×3 convs 2·(8·8·9·36·2) each; dw4 per conv a depthwise
# ×4 2·(32·9·36·2) and a 1×1 2·(32·8·36·2); seed adds per conv the field 1×1 from 6 monomials on one grid
# 2·(6·8·36). ImageNet suite, Bottleneck 32 → (8) → 32: 1×1 convs 2·(32·8·36·2) each, 3×3 2·(8·8·9·36·2);
# dw4/seed: depthwise 8 → 32 2·(32·9·36·2), then the 1×1 32 → 32 2·(32·32·36·2); seed's field 2·(6·32·36).
BLOCK_FLOPS = {
    "small": {"torchvision": 2 * 82944, "dw4": 2 * (41472 + 36864), "seed": 2 * (41472 + 36864 + 3456)},
    "imagenet": {"torchvision": 36864 + 82944 + 36864, "dw4": 36864 + 41472 + 147456,
                 "seed": 36864 + 41472 + 13824 + 147456},
}


@pytest.mark.slow
def test_blocks_smoke(tmp_path):
    out = _smoke("blocks", tmp_path, "--variants", "seed,dw4")
    rows = [r for r in out["record"]["results"] if "time_ratio" in r]
    # both suites × both formats × both precisions × (torchvision, seed, dw4)
    assert len(rows) == 2 * 2 * 2 * 3
    groups: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        groups.setdefault((r["suite"], r["format"], r["precision"]), {})[r["block"]] = r
    for (suite, _, _), by in groups.items():
        ref = by["torchvision"]
        _ratio_from_rounds(list(by.values()), ref)
        for name, r in by.items():
            assert r["flops"] == BLOCK_FLOPS[suite][name], (suite, name)
            assert r["flop_ratio"] == pytest.approx(BLOCK_FLOPS[suite][name] / BLOCK_FLOPS[suite]["torchvision"])
            assert r["saved_ratio"] == pytest.approx(r["saved_mb"] / ref["saved_mb"])
            assert r["ms"] == pytest.approx(statistics.median(r["round_ms"]))
    # torchvision's BasicBlock in fp32 NCHW saves, per conv, its input (for the weight gradient); per BatchNorm
    # its input, the batch mean and inverse std and the running mean and variance it is handed (4 vectors of 8);
    # both ReLUs their output: x, conv1 out, relu1 out (= conv2's input), conv2 out, block out: 5 maps of
    # 2·8·6·6 floats, and 2·4·8 statistics
    small = groups["small", "nchw", "fp32"]["torchvision"]
    assert small["saved_mb"] * 2**20 == 4 * (5 * 2 * 8 * 36 + 2 * 4 * 8)
    overhead = [r for r in out["record"]["results"] if "varcoef_overhead" in r]
    assert {r["block"] for r in overhead} == {"seed/dw4"}
    for r in overhead:
        by = groups[r["suite"], r["format"], r["precision"]]
        per_round = [a / b for a, b in zip(by["seed"]["round_ms"], by["dw4"]["round_ms"])]
        assert r["varcoef_overhead"] == pytest.approx(statistics.median(per_round) - 1, rel=1e-12)
    assert "| suite | shape |" in out["stdout"]


@pytest.mark.slow
def test_models_smoke(tmp_path):
    import torchvision

    from pdeconv.models import pde_resnet20, pde_resnet50, profile

    out = _smoke("models", tmp_path)
    rows = out["record"]["results"]
    assert [(r["suite"], r["model"]) for r in rows] == [
        ("resnet50", "torchvision"), ("resnet50", "seed"), ("resnet20", "baseline"), ("resnet20", "seed")
    ]
    _ratio_from_rounds(rows[:2], rows[0])
    _ratio_from_rounds(rows[2:], rows[2])
    expected = [  # the smoke sizes: ResNet-50 at 2×3×32×32, ResNet-20 at 4×1×8×8
        profile(torchvision.models.resnet50(), (2, 3, 32, 32)).flops,
        profile(pde_resnet50(variant="seed"), (2, 3, 32, 32)).flops,
        profile(pde_resnet20(in_chans=1), (4, 1, 8, 8)).flops,
        profile(pde_resnet20(variant="seed", in_chans=1), (4, 1, 8, 8)).flops,
    ]
    for r, flops, batch, ref in zip(rows, expected, (2, 2, 4, 4), (rows[0], rows[0], rows[2], rows[2])):
        assert r["flops"] == flops and r["gflops_per_img"] == pytest.approx(flops / batch / 1e9)
        assert r["flop_ratio"] == pytest.approx(flops / ref["flops"])
        assert r["img_per_s"] == pytest.approx(batch / r["step_ms"] * 1e3)
        assert r["step_ms"] == pytest.approx(statistics.median(r["round_ms"]))
    assert expected[1] > expected[0]  # the essay's block adds the 1×1 over 4× the channels


@pytest.mark.slow
def test_fashion_mnist_smoke(tmp_path):
    out = _smoke("fashion_mnist", tmp_path, "--targets", "0.05")
    rows = out["record"]["results"]
    assert [r["variant"] for r in rows] == ["baseline", "seed"]
    for r in rows:
        (run,) = r["runs"]
        (point,) = run["curve"]  # one epoch: (wall s since the start, test accuracy)
        assert run["test_acc"] == point[1] and (32 * point[1]).is_integer()  # 32 test images
        assert r["acc"] == pytest.approx(100 * run["test_acc"]) and r["seeds"] == 1
        assert r["wall_s"] == pytest.approx(run["wall_s"]) and run["wall_s"] >= point[0]
        assert r["to_0.05"] == (f"{point[0]:.0f} s (1/1)" if point[1] >= 0.05 else "–")


@pytest.mark.slow
def test_bad_options_are_one_line_errors(tmp_path):
    cmd = [sys.executable, str(BENCHMARKS / "blocks.py"), "--smoke", "--formats", "nhwc", "--results",
           str(tmp_path / "x.jsonl")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "choose from nchw, channels_last" in done.stderr
    assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.slow
def test_speed_smoke(tmp_path):
    out = _smoke("speed", tmp_path)
    rows = out["record"]["results"]
    assert [(r["suite"], r["model"]) for r in rows] == [
        ("resnet20", "baseline"), ("resnet20", "neumann"), ("resnet20", "periodic"),
        ("resnet50", "torchvision"), ("resnet50", "baseline"), ("resnet50", "neumann"),
    ]
    _ratio_from_rounds(rows[:3], rows[0])
    _ratio_from_rounds(rows[3:], rows[3])
    for r in rows:
        assert r["speed"] == pytest.approx(1 / r["time_ratio"]) and r["format"] == "channels_last"


@pytest.mark.slow
def test_varcoef_reduction_smoke(tmp_path):
    out = _smoke("varcoef_reduction", tmp_path)
    rows = out["record"]["results"]
    assert {r["way"] for r in rows} == {"sum f32", "sum", "loop", "matmul"}
    for r in rows:  # every way computes the batch sum: bf16 to its rounding, float32 to 1e-5
        assert r["rel_error"] < (2e-2 if r["precision"] == "bf16" else 1e-5), r
        assert r["ms"] == pytest.approx(statistics.median(r["round_ms"]))


@pytest.mark.slow
def test_padding_smoke_and_its_cat_pad(tmp_path):
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("padding_bench", BENCHMARKS / "padding.py")
    sys.path.insert(0, str(BENCHMARKS))
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    x = torch.randn(2, 3, 5, 6, generator=torch.Generator().manual_seed(0))
    for mode in ("reflect", "circular", "replicate"):  # the cat way pads as F.pad does
        assert torch.equal(module.cat_pad(x, mode), torch.nn.functional.pad(x, (1, 1, 1, 1), mode=mode)), mode
    (row,) = _smoke("padding", tmp_path)["record"]["results"]
    assert set(row) == {"shape", "zeros", "reflect F.pad", "circular F.pad", "replicate F.pad", "reflect cat",
                        "circular cat", "reflect ring", "circular ring", "replicate ring"}
    (row,) = _smoke("padding", tmp_path / "parts", "--parts")["record"]["results"]
    assert set(row) == {"shape", "pad", "forward same", "forward valid", "input grad same", "input grad valid",
                        "weight grad same", "weight grad valid"}


def _answers(monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("answers", BENCHMARKS / "answers.py")
    answers = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "answers", answers)  # its dataclasses look their module up there
    spec.loader.exec_module(answers)
    return answers


def test_answers_status_tells_finished_training_interrupted_and_not_started_runs(tmp_path, monkeypatch):
    from pdeconv import engine
    from pdeconv.experiment.store import lock_run, unlock_run

    answers = _answers(monkeypatch)

    def run(variant, seed, epochs_done, checkpoint=False):
        d = tmp_path / variant / f"seed{seed}"
        d.mkdir(parents=True)
        (d / engine.CONFIG).write_text(json.dumps({"config": {"epochs": 3}}))
        line = {"train_loss": 1.0, "train_acc": 0.5, "lr": 0.1, "img_per_s": 100.0, "train_s": 1.0,
                "test_loss": 1.0, "test_acc": 0.5, "wall_s": 1.0}  # what engine writes per epoch
        (d / engine.METRICS).write_text("".join(json.dumps({"epoch": e + 1, **line}) + "\n"
                                                for e in range(epochs_done)))
        if checkpoint:
            (d / engine.CHECKPOINT).write_bytes(b"")
        return d

    run("baseline", 0, 3)
    run("baseline", 1, 3)
    run("wave", 0, 1, checkpoint=True)
    held = lock_run(run("wave", 1, 2))  # as a compare command training it would
    try:
        (line,) = answers.status(["wave"], 3, tmp_path)
    finally:
        unlock_run(held)
    assert line == ("wave: 2/6 finished; training now: wave seed 1 (epoch 2/3); interrupted: wave seed 0 "
                    "(epoch 1/3, resumes from its checkpoint); 2 not started")
    (line,) = answers.status(["wave"], 3, tmp_path)
    assert "training now" not in line and "wave seed 1 (epoch 2/3, no checkpoint: starts again)" in line


def test_every_committed_csv_reads_back_with_one_field_per_header_column():
    """Each results CSV read as any reader would (csv.DictReader): no row with more or fewer fields than its header
    (a label with a comma, written by hand, once gave 5 fields under a 4-field header)."""
    import csv

    paths = sorted((BENCHMARKS.parent / "results").rglob("*.csv"))
    assert len(paths) >= 10
    for path in paths:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
        assert rows, path
        for i, row in enumerate(rows):
            assert None not in row and None not in row.values(), f"{path} row {i + 2}: field count != header's"


def _write_accuracies(folder: Path, table: dict[str, list[float]]) -> None:
    """``folder/results.csv`` as compare writes it, reduced to variant, seed (0, 1, ...) and test_acc."""
    import csv

    folder.mkdir(parents=True)
    with open(folder / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant", "seed", "test_acc"])
        for variant, values in table.items():
            w.writerows([variant, s, v] for s, v in enumerate(values))


def test_document_family_adjusts_every_comparison_together(tmp_path, monkeypatch):
    """The document-wide table from small CSVs made here: paired Δs, a contrast, an rts-vs-plain Welch row, the
    three adjustments (Holm within an experiment ≤ Holm over the document; BH ≤ Holm) and the answer words."""
    import csv

    from pdeconv.experiment.stats import benjamini_hochberg, holm

    answers = _answers(monkeypatch)
    accs = {"baseline": [0.930, 0.931, 0.929, 0.932, 0.930], "varcoef": [0.933, 0.934, 0.931, 0.935, 0.933],
            "varcoef=1": [0.930, 0.932, 0.929, 0.932, 0.931]}
    rts = {"baseline": [0.80, 0.81, 0.79, 0.80, 0.80], "varcoef": [0.81, 0.825, 0.80, 0.815, 0.81],
           "varcoef=1": [0.80, 0.81, 0.792, 0.80, 0.801]}
    for name, table in (("varcoef", accs), ("rts-varcoef", rts)):
        _write_accuracies(tmp_path / name, table)
    rows = answers.document_family(tmp_path)
    by = {(r["setting"], r["comparison"]): r for r in rows}
    assert set(by) == {("plain", "varcoef=1 − baseline"), ("plain", "varcoef − baseline"),
                       ("plain", "varcoef − varcoef=1"), ("rts", "varcoef=1 − baseline"),
                       ("rts", "varcoef − baseline"), ("rts vs plain", "Δ(varcoef=1) rts − Δ(varcoef=1) plain"),
                       ("rts vs plain", "Δ(varcoef) rts − Δ(varcoef) plain")}
    assert by["plain", "varcoef − baseline"]["delta"] == pytest.approx(0.28, abs=1e-9)  # points
    assert by["rts vs plain", "Δ(varcoef) rts − Δ(varcoef) plain"]["delta"] == pytest.approx(1.20 - 0.28, abs=1e-9)
    ps = [r["p"] for r in rows]
    assert [r["p_document_holm"] for r in rows] == pytest.approx(holm(ps))
    assert [r["p_document_bh"] for r in rows] == pytest.approx(benjamini_hochberg(ps))
    for r in rows:
        assert r["p_experiment_holm"] <= r["p_document_holm"] + 1e-12
        assert r["answer"].startswith(("higher", "lower", "not resolved", "equivalent"))
    assert by["plain", "varcoef − baseline"]["answer"].startswith("higher: resolved")
    csv_path, md_path = answers.write_summary(rows, tmp_path)
    with open(csv_path, newline="") as f:
        back = list(csv.DictReader(f))
    assert len(back) == len(rows) and float(back[0]["p"]) == pytest.approx(rows[0]["p"], rel=1e-5)
    assert f"{len(rows)} comparisons" in md_path.read_text()
    # the by-setting table: a row per question asked in rts too, a column per setting, the rts cell with its Welch
    table = answers.by_setting_table(answers.read_summary(csv_path)).splitlines()
    assert table[0].count("|") == 4 and "rotated" in table[0]
    degree2 = next(line for line in table if line.startswith("| variable coefficients (degree 2)"))
    plain_cell, rts_cell = [c.strip() for c in degree2.strip("|").split("|")][1:]
    assert plain_cell.startswith("+0.28 [") and "against plain" not in plain_cell
    assert rts_cell.startswith("+1.20 [") and "against plain +0.92" in rts_cell
    assert len(table) == 4  # head, rule, degree 2 and degree 1 (the plain-only contrast is not asked twice)
    one_seed = [dict(r, ci_low=None, ci_high=None) for r in answers.read_summary(csv_path)]  # no interval from 1
    assert "| +1.20, " in answers.by_setting_table(one_seed)
    # the page writer refuses what it cannot place instead of dropping text
    page = f"# t\n\n{answers.BEGIN_SETTINGS}\nold table\n"
    with pytest.raises(ValueError, match="without"):
        answers.results_page(page, rows)
    page = "## A renamed section\n\n| variant | seeds | Δ vs baseline | p (BH, page) | p (Holm, page) |\n"
    with pytest.raises(ValueError, match="'A renamed section' has a table with page-wide p-values"):
        answers.results_page(page, rows)


def test_a_contrast_is_drawn_in_its_own_experiments_setting(tmp_path, monkeypatch):
    """seed − dw4 is a contrast on the plain images and on rts: each pairs the two variants of its own setting's
    runs (never a plain run with an rts run), and a setting without both variants draws none."""
    answers = _answers(monkeypatch)
    _write_accuracies(tmp_path / "rts-seed", {"baseline": [0.80, 0.81, 0.79, 0.80, 0.80],
                                              "seed": [0.79, 0.80, 0.78, 0.79, 0.79],
                                              "dw4": [0.795, 0.806, 0.788, 0.797, 0.794]})
    by = {(r["setting"], r["comparison"]): r for r in answers.document_family(tmp_path)}
    assert ("plain", "seed − dw4") not in by
    contrast = by["rts", "seed − dw4"]
    assert contrast["kind"] == "contrast" and contrast["experiment"] == "rts-seed" and contrast["n"] == 5
    assert contrast["delta"] == pytest.approx(100 * (3.95 - 3.98) / 5, abs=1e-9)  # the paired mean, in points
    _write_accuracies(tmp_path / "seed", {"baseline": [0.93] * 5, "seed": [0.925, 0.924, 0.926, 0.925, 0.925]})
    _write_accuracies(tmp_path / "operators", {"baseline": [0.93] * 5, "dw4": [0.927, 0.926, 0.928, 0.927, 0.926]})
    by = {(r["setting"], r["comparison"]): r for r in answers.document_family(tmp_path)}
    assert by["plain", "seed − dw4"]["delta"] == pytest.approx(100 * (4.625 - 4.634) / 5, abs=1e-9)
    assert by["rts", "seed − dw4"]["delta"] == pytest.approx(contrast["delta"])


@pytest.mark.slow
def test_answers_rerun_on_another_dataset_into_a_folder_of_ones_own(tmp_path, make_cifar, monkeypatch):
    """Someone with CIFAR-10 reruns an answer with one command into their own results folder: the command names
    their dataset, preset, device and folder, leaves out the Fashion-MNIST-only rts experiments, trains, and the
    summary reads their folder."""
    import csv

    answers = _answers(monkeypatch)
    make_cifar(tmp_path / "data", "cifar10", n_per_batch=8)
    mine = tmp_path / "mine"
    common = ["--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--results", str(mine),
              "--preset", "quick", "--device", "cpu", "--seeds", "2",
              "--extra", "--epochs 1 --batch-size 16 --train-subset 32 --amp none --no-channels-last"]
    listed = subprocess.run([sys.executable, str(BENCHMARKS / "answers.py"), "wave", "rts-seed", "--list", *common],
                            capture_output=True, text=True, check=True).stdout
    assert "left out on cifar10: rts-seed" in listed
    assert f"--runs {mine / 'store-fast'} --out {mine / 'wave'}" in listed and "--dataset cifar10" in listed
    assert "--preset quick" in listed and "--device cpu" in listed and "--epochs 1" in listed
    subprocess.run([sys.executable, str(BENCHMARKS / "answers.py"), "wave", *common], check=True,
                   capture_output=True, text=True)
    with open(mine / "wave" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["variant"], r["seed"]) for r in rows] == [("baseline", "0"), ("baseline", "1"), ("wave", "0"),
                                                         ("wave", "1")]
    config = json.loads((mine / "store-fast" / "wave" / "seed0" / "config.json").read_text())
    assert (config["config"]["dataset"], config["config"]["epochs"]) == ("cifar10", 1)
    assert config["dataset"]["in_chans"] == 3
    family = answers.document_family(mine)
    assert [r["comparison"] for r in family] == ["wave − baseline"]


@pytest.mark.slow
def test_discover_benchmark_times_the_whole_command_on_a_noisy_copy_of_a_real_file(tmp_path, monkeypatch):
    """discover_vs_pysindy.py's real-file timing: a noisy copy of a PDE-FIND-style .mat (u stored (x, t)) is written
    in the original's orientation, the command runs as a user runs it, and its stages come back with its answer."""
    import importlib.util

    import numpy as np
    import scipy.io

    from pdeconv.discover import load, simulate

    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports its neighbour _common
    spec = importlib.util.spec_from_file_location("discover_vs_pysindy", BENCHMARKS / "discover_vs_pysindy.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    sim = simulate("burgers-1d", grid=64, zoom=2, steps=40, trajectories=1, progress=False)
    path = tmp_path / "burgers.mat"
    x = np.arange(64) * sim.dx
    scipy.io.savemat(path, {"usol": sim.u[0, :, 0, :].T, "x": x[None], "t": (np.arange(41) * sim.dt)[:, None]})
    case = dict(data=("load", str(path), {"u": "usol", "t": "t", "x": "x"}), library="nonlinear", max_order=2)
    data = bench.noisy(load(path, variables=case["data"][2]), 0.01, seed=0)
    row = bench.run_command(data, case, 0.01, tmp_path)
    copy = scipy.io.loadmat(tmp_path / "noisy-0.01.mat")["usol"]
    np.testing.assert_array_equal(copy, data.u[0, :, 0, :].T)  # the noisy array, stored (x, t) as the original
    assert {"load", "prediction", "report"} <= set(row["command_stages"])
    assert 0 < sum(row["command_stages"].values()) < row["command_seconds"]
    assert "u*u_x" in row["command_equations"]["u"]
    assert row["command"].startswith("pdeconv discover fit ")


def test_budget_plot_reads_each_budgets_paired_difference(tmp_path, monkeypatch):
    """answers.py --budget: Δ(seed − baseline) at every budget whose results.csv exists, paired over shared seeds,
    written as a CSV that reads back and a figure."""
    import csv

    answers = _answers(monkeypatch)
    accuracy = {"quick-seed": (0.880, 0.850), "seed": (0.9375, 0.932)}  # (baseline, seed) at seed 0; +0.001 per seed
    for name, (base, block) in accuracy.items():
        folder = tmp_path / name
        folder.mkdir()
        rows = [{"variant": v, "seed": s, "test_acc": a + 0.001 * s + (0.0005 * s * s if v == "seed" else 0.0)}
                for s in range(5) for v, a in (("baseline", base), ("seed", block))]
        with open(folder / "results.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, ["variant", "seed", "test_acc"])
            writer.writeheader()
            writer.writerows(rows)
    rows = answers.budget(tmp_path)
    assert [(r["experiment"], r["epochs"], r["n"]) for r in rows] == [("quick-seed", 2, 5), ("seed", 10, 5)]
    # Δ per seed: (block − base) + 0.0005 s², mean over s = 0..4 of s² is 6
    assert rows[0]["delta"] == pytest.approx(100 * (0.850 - 0.880 + 0.0005 * 6))
    assert rows[1]["delta"] == pytest.approx(100 * (0.932 - 0.9375 + 0.0005 * 6))
    assert rows[0]["ci_low"] < rows[0]["delta"] < rows[0]["ci_high"]
    csv_path, png = answers.write_budget(rows, tmp_path)
    with open(csv_path, newline="") as f:
        back = list(csv.DictReader(f))
    assert [float(r["delta"]) for r in back] == pytest.approx([r["delta"] for r in rows])
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_another_settings_delta_meets_its_plain_delta_from_whichever_experiment_measured_it(tmp_path, monkeypatch):
    """rts-seed's dw4 is set against the plain Δ(dw4 − baseline) of `operators`, an experiment listed after it."""

    answers = _answers(monkeypatch)
    tables = {"operators": {"baseline": [0.930, 0.931, 0.929], "dw4": [0.926, 0.928, 0.925]},
              "rts-seed": {"baseline": [0.80, 0.81, 0.79], "dw4": [0.80, 0.812, 0.791]}}
    for name, table in tables.items():
        _write_accuracies(tmp_path / name, table)
    by = {(r["setting"], r["comparison"]): r for r in answers.document_family(tmp_path)}
    welch = by["rts vs plain", "Δ(dw4) rts − Δ(dw4) plain"]
    assert welch["kind"] == "welch" and welch["n"] == 3  # the other setting's seeds
    assert welch["delta"] == pytest.approx(100 * ((0.0 + 0.002 + 0.001) / 3 - (-0.004 - 0.003 - 0.004) / 3))


def test_each_variants_own_rate_is_chosen_on_validation_and_answered_again(tmp_path, monkeypatch):
    """The sweep's results (val_acc and test_acc per run) → the best rate per variant by mean validation accuracy
    (never the test set: here the test accuracy prefers other rates), the re-answer experiments for the variants
    whose best differs from the baseline's, and their comparison in the family as `seed − baseline`."""
    import csv

    answers = _answers(monkeypatch)
    # (val, test) per variant and rate; seed's best validation rate is 0.4, the baseline's 0.2, dw4's 0.2, order2's
    # 0.1 (its question is against dw4, so its re-answer is too)
    accs = {("baseline", "0.1"): (0.90, 0.95), ("baseline", "0.2"): (0.92, 0.90), ("baseline", "0.4"): (0.91, 0.90),
            ("seed", "0.1"): (0.88, 0.99), ("seed", "0.2"): (0.89, 0.90), ("seed", "0.4"): (0.91, 0.80),
            ("dw4", "0.1"): (0.89, 0.90), ("dw4", "0.2"): (0.90, 0.90), ("dw4", "0.4"): (0.90, 0.99),
            ("order2", "0.1"): (0.895, 0.88), ("order2", "0.2"): (0.89, 0.90), ("order2", "0.4"): (0.88, 0.90)}
    for lr in answers.LR_RATES:
        folder = tmp_path / "lr" / f"lr-{lr}"
        folder.mkdir(parents=True)
        with open(folder / "results.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["variant", "seed", "test_acc", "val_acc"])
            for (variant, rate), (val, test) in accs.items():
                if rate == lr:
                    w.writerows([f"{variant}+lr={lr}", s, test, val + 0.001 * s] for s in range(2))
    before = subprocess.run([sys.executable, str(BENCHMARKS / "answers.py"), "--lr-choice", "--results",
                             str(tmp_path / "none")], capture_output=True, text=True)
    assert before.returncode == 2 and "no finished sweep yet" in before.stderr  # and it writes nothing
    assert not (tmp_path / "none").exists()
    rows = answers.lr_choice(tmp_path)
    best = {r["variant"]: r["lr"] for r in rows if r["best"] == "yes"}
    assert best == {"baseline": 0.2, "seed": 0.4, "dw4": 0.2, "order2": 0.1}  # dw4's tie (0.90 at 0.2, 0.4): 0.2
    seed_04 = next(r for r in rows if r["variant"] == "seed" and r["lr"] == 0.4)
    assert seed_04["val_acc"] == pytest.approx(0.9105) and seed_04["seeds"] == 2
    choice, table, png = answers.write_lr_choice(rows, tmp_path / "lr")
    assert "| seed | 88.05 | 89.05 | 91.05 **best** | 0.4 |" in table.read_text()
    assert png.read_bytes()[:4] == b"\x89PNG"
    own = answers.own_lr_experiments(choice)
    assert list(own) == ["lr-seed", "lr-order2"]
    assert (own["lr-order2"].variants, own["lr-order2"].reference) == ("dw4+lr=0.2,order2+lr=0.1", "dw4+lr=0.2")
    e = own["lr-seed"]
    assert (e.variants, e.reference, e.store, e.setting) == ("baseline+lr=0.2,seed+lr=0.4", "baseline+lr=0.2",
                                                             answers.STORE_LR, "own lr")
    assert e.seeds == (2, 3, 4, 5, 6)  # fresh seeds: not the sweep's 0 and 1, which chose the rates
    assert answers.spec_name("seed+lr=0.4") == "seed" and answers.spec_name("lr=0.1") == "baseline"
    assert answers.spec_name("seed + lr = 0.4") == "seed" and answers.spec_name("penalty=1") == "penalty=1"
    # its answer joins the family as seed − baseline, beside the plain one
    monkeypatch.setitem(answers.EXPERIMENTS, "lr-seed", e)
    import argparse

    args = argparse.Namespace(threads=1, target_ci=None, max_seeds=10, seeds=5, data_dir=None)
    assert "--seeds 2,3,4,5,6" in " ".join(answers.command("lr-seed", args))
    monkeypatch.setitem(answers.EXPERIMENTS, "lr-order2", own["lr-order2"])
    for name, table_ in (("seed", {"baseline": [0.930, 0.931, 0.929], "seed": [0.925, 0.926, 0.925]}),
                         ("lr-seed", {"baseline+lr=0.2": [0.930, 0.932, 0.929], "seed+lr=0.4": [0.929, 0.931, 0.929]}),
                         ("order", {"dw4": [0.930, 0.931, 0.929], "order2": [0.926, 0.928, 0.925]}),
                         ("lr-order2", {"dw4+lr=0.2": [0.931, 0.930, 0.929], "order2+lr=0.1": [0.929, 0.930, 0.928]})):
        _write_accuracies(tmp_path / name, table_)
    by = {(r["setting"], r["comparison"]): r for r in answers.document_family(tmp_path)}
    assert by["own lr", "seed − baseline"]["delta"] == pytest.approx(100 * (-0.002 / 3))
    assert ("own lr vs plain", "Δ(seed) own lr − Δ(seed) plain") in by
    # order2 at its own rate answers its plain question, against dw4, and is set against the plain answer to it
    assert by["own lr", "order2 − dw4"]["delta"] == pytest.approx(100 * (-0.003 / 3))
    welch = by["own lr vs plain", "Δ(order2) own lr − Δ(order2) plain"]
    assert welch["delta"] == pytest.approx(100 * (-0.003 / 3 - (-0.011 / 3)))
    assert "| order-≤2 operators (against free depthwise ×4 kernels): order2 − dw4 | −0.37 [" in (
        answers.by_setting_table(list(by.values())))
