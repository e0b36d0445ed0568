"""benchmarks/: each script runs end to end at smoke size and appends one well-formed JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _smoke(script: str, tmp_path: Path, *extra: str) -> dict:
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


def test_blocks_smoke(tmp_path):
    out = _smoke("blocks", tmp_path, "--variants", "seed,dw4")
    rows = [r for r in out["record"]["results"] if "time_ratio" in r]
    # both suites × both formats × both precisions × (torchvision, seed, dw4)
    assert len(rows) == 2 * 2 * 2 * 3
    for r in rows:
        assert r["time_ratio"] > 0 and r["saved_mb"] > 0
        if r["block"] == "torchvision":
            assert r["flop_ratio"] == 1 and r["saved_ratio"] == 1
    overhead = [r for r in out["record"]["results"] if "varcoef_overhead" in r]
    assert {r["block"] for r in overhead} == {"seed/dw4"}
    assert "| suite | shape |" in out["stdout"]


def test_models_smoke(tmp_path):
    out = _smoke("models", tmp_path)
    rows = out["record"]["results"]
    assert [(r["suite"], r["model"]) for r in rows] == [
        ("resnet50", "torchvision"), ("resnet50", "seed"), ("resnet20", "baseline"), ("resnet20", "seed")
    ]
    seed50 = rows[1]
    assert seed50["flop_ratio"] > 1  # the essay's block adds the 1×1 over 4× the channels
    assert seed50["time_per_flop_ratio"] == pytest.approx(seed50["time_ratio"] / seed50["flop_ratio"])


def test_fashion_mnist_smoke(tmp_path):
    out = _smoke("fashion_mnist", tmp_path, "--targets", "0.05")
    rows = out["record"]["results"]
    assert [r["variant"] for r in rows] == ["baseline", "seed"]
    for r in rows:
        (run,) = r["runs"]
        assert len(run["curve"]) == 1 and 0 <= run["curve"][0][1] <= 1  # one epoch: (wall s, test accuracy)
        assert run["wall_s"] >= run["curve"][0][0] > 0


def test_bad_options_are_one_line_errors(tmp_path):
    cmd = [sys.executable, str(BENCHMARKS / "blocks.py"), "--smoke", "--formats", "nhwc", "--results",
           str(tmp_path / "x.jsonl")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "choose from nchw, channels_last" in done.stderr
    assert not (tmp_path / "x.jsonl").exists()
