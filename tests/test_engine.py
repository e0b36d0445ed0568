"""pdeconv.engine: learning, exact resume, safe and atomic checkpoints, NaN stops, DDP on CPU with gloo."""

from __future__ import annotations

import errno
import json
import math
import os
import pickle
import socket
import warnings

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn

from pdeconv import data, engine, storage
from pdeconv.data import dataset_info
from pdeconv.engine import TrainConfig
from pdeconv.runtime import code_revision


def tiny_model(info, dropout: float = 0.0) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(info.in_chans, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(16, info.num_classes),
    )


@pytest.fixture
def fmnist(tmp_path, make_fashion_mnist):
    return make_fashion_mnist(tmp_path / "data", 64, 32)


def config(tmp_path, data_dir, **kwargs) -> TrainConfig:
    base = dict(
        data_dir=str(data_dir),
        epochs=2,
        batch_size=16,
        lr=0.05,
        out=str(tmp_path / "run"),
        device="cpu",
        progress=False,
    )
    return TrainConfig(**{**base, **kwargs})


def read_metrics(out) -> list[dict]:
    return [json.loads(line) for line in (out / engine.METRICS).read_text().splitlines()]


class Killed(Exception):
    """Stands in for the process dying right after a checkpoint was written."""


def kill_after(epoch: int):
    def hook(record):
        if record["epoch"] == epoch:
            raise Killed

    return hook


# ------------------------------------------------------------------------------------------ pieces


def test_lr_factor_warmup_then_cosine_or_linear():
    f = lambda s, schedule="cosine": engine.lr_factor(s, total=10, warmup=2, schedule=schedule)  # noqa: E731
    assert [f(0), f(1), f(2)] == [0.5, 1.0, 1.0]
    assert f(6) == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert f(6, "onecycle") == pytest.approx(1 - 4 / 8)
    assert f(8) == pytest.approx(0.5 * (1 + math.cos(math.pi * 6 / 8)))
    assert f(9) == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert engine.lr_factor(0, total=5, warmup=0, schedule="cosine") == 1.0


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match=r"unknown `optimizer` 'adam'; choose one of: sgd, adamw"):
        TrainConfig(optimizer="adam")
    with pytest.raises(ValueError, match=r"unknown `amp` 'fp8'; choose one of: none, bf16, fp16"):
        TrainConfig(amp="fp8")
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        TrainConfig(dataset="mnist")
    with pytest.raises(ValueError, match=r"`epochs` must be at least 1"):
        TrainConfig(epochs=0)
    assert TrainConfig(dataset="CIFAR10").dataset == "cifar10"
    with pytest.raises(ValueError, match=r"`batch_size` must be at least 1"):
        TrainConfig(batch_size=0)


def test_out_that_is_a_file_is_a_clear_error(tmp_path, fmnist, capsys):
    from pdeconv.cli import main

    (tmp_path / "afile.txt").write_text("mine")
    with pytest.raises(ValueError, match="afile.txt is a file; `out` must be a directory"):
        engine.train(config(tmp_path, fmnist, out=str(tmp_path / "afile.txt")), tiny_model)
    assert main(["compare", "--variants", "baseline", "--seeds", "1", "--out", str(tmp_path / "afile.txt")]) == 2
    assert "afile.txt is a file; --out must be a directory" in capsys.readouterr().err
    # the other commands that write a folder refuse it before their work (a fit need not run to find out)
    afile = str(tmp_path / "afile.txt")
    for argv in (["analyze", "pde_resnet20", "--out", afile], ["demo", "heat", "--out", afile],
                 ["discover", "fit", str(tmp_path / "not-read.npz"), "--out", afile],
                 ["probe", "rotation", "--seeds", "2", "--quick", "--out", afile]):
        assert main(argv) == 2, argv
        assert "afile.txt is a file; --out must be a directory" in capsys.readouterr().err, argv
    assert (tmp_path / "afile.txt").read_text() == "mine"
    # discover simulate writes a file: a folder there is refused, not turned into "folder.npz" beside it
    assert main(["discover", "simulate", "--pde", "heat", "--grid", "16", "--steps", "2", "--out", str(tmp_path)]) == 2
    assert f"{tmp_path} is a folder; give a file name" in capsys.readouterr().err
    assert not (tmp_path.parent / f"{tmp_path.name}.npz").exists()


def test_evaluate_with_flip_tta_averages_mirror_logits():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x, y = torch.randn(5, 1, 3, 4), torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        logits = (model(x) + model(x.flip(-1))) / 2
    got = engine.evaluate(model, [(x[:3], y[:3]), (x[3:], y[3:])], tta_flip=True)
    assert got["test_loss"] == pytest.approx(float(nn.functional.cross_entropy(logits, y)), rel=1e-6)
    assert got["test_acc"] == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    plain = engine.evaluate(model, [(x, y)])
    with torch.no_grad():
        assert plain["test_loss"] == pytest.approx(float(nn.functional.cross_entropy(model(x), y)), rel=1e-6)


# ------------------------------------------------------------------------------------------ training


def test_tiny_model_learns_and_writes_its_files(tmp_path, make_fashion_mnist):
    data_dir = make_fashion_mnist(tmp_path / "data", 512, 256)
    cfg = config(tmp_path, data_dir, epochs=8, batch_size=16, lr=0.05)  # 8 × 32 = 256 steps
    summary = engine.train(cfg, tiny_model)
    assert summary["test_acc"] > 0.7  # chance is 0.1
    out = tmp_path / "run"
    history = read_metrics(out)
    assert [r["epoch"] for r in history] == list(range(1, 9))
    assert set(history[0]) == {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "img_per_s",
                               "train_s", "wall_s"}  # exactly: no penalty column without a penalty
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    for r in history:  # 512 images per epoch; 32 steps of 16
        assert r["img_per_s"] == pytest.approx(512 / r["train_s"]) and r["wall_s"] >= r["train_s"]
        assert (256 * r["test_acc"]).is_integer() and (512 * r["train_acc"]).is_integer()
    meta = json.loads((out / engine.CONFIG).read_text())
    assert meta["config"]["lr"] == 0.05 and meta["torch_version"] == torch.__version__ and meta["device"] == "cpu"
    assert meta["code"] == code_revision()  # the checkout that ran it (None outside one)
    assert "pdeconv_version" in meta and meta["params"] == sum(
        p.numel() for p in tiny_model(dataset_info("fashion-mnist")).parameters()
    )
    assert list(out.glob("events.out.tfevents.*"))
    assert engine.load_checkpoint(out / engine.CHECKPOINT)["epoch"] == 8
    assert engine.run_summary(out) == {**summary, "finished": True}  # the files say what train() returned
    # the summary recomputed from the epoch records by hand
    best = max(history, key=lambda r: r["test_acc"])
    assert summary["test_acc"] == history[-1]["test_acc"] and summary["epochs"] == 8
    assert (summary["best_test_acc"], summary["best_epoch"]) == (best["test_acc"], best["epoch"])
    assert summary["wall_s"] == pytest.approx(sum(r["wall_s"] for r in history))
    assert summary["train_img_per_s"] == pytest.approx(8 * 512 / sum(r["train_s"] for r in history))


@pytest.mark.parametrize("precision", [{}, {"amp": "bf16", "channels_last": True}], ids=["float32", "bf16"])
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, fmnist, precision):
    # float32, and bf16 autocast with channels-last as the fast preset trains (what docs/results.md's runs used)
    model = lambda info: tiny_model(info, dropout=0.3)  # noqa: E731  (dropout: the global RNG must resume too)
    straight = config(tmp_path, fmnist, out=str(tmp_path / "straight"), **precision)
    engine.train(straight, model)
    stopped = config(tmp_path, fmnist, out=str(tmp_path / "stopped"), **precision)
    with pytest.raises(Killed):
        engine.train(stopped, model, on_epoch_end=kill_after(1))
    assert engine.load_checkpoint(tmp_path / "stopped" / engine.CHECKPOINT)["epoch"] == 1
    first = json.loads((tmp_path / "stopped" / engine.CONFIG).read_text())
    engine.train(config(tmp_path, fmnist, out=str(tmp_path / "stopped"), resume=True, **precision), model)
    meta = json.loads((tmp_path / "stopped" / engine.CONFIG).read_text())  # when it started, and each resumption
    assert (meta["started"], meta["code"]) == (first["started"], first["code"]) and "resumed" not in first
    assert [(r["epoch"], r["code"]) for r in meta["resumed"]] == [(1, code_revision())]

    a = engine.load_checkpoint(tmp_path / "straight" / engine.CHECKPOINT)
    b = engine.load_checkpoint(tmp_path / "stopped" / engine.CHECKPOINT)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    timing = {"img_per_s", "train_s", "wall_s"}
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]  # noqa: E731
    assert strip(read_metrics(tmp_path / "straight")) == strip(read_metrics(tmp_path / "stopped"))
    assert len(read_metrics(tmp_path / "stopped")) == 2
    # resuming a finished run trains nothing and reports the same summary
    again = engine.train(config(tmp_path, fmnist, out=str(tmp_path / "stopped"), resume=True, **precision), model)
    assert again["test_acc"] == a["metrics"][-1]["test_acc"] and again["epochs"] == 2


def test_two_runs_with_the_same_settings_are_identical(tmp_path, fmnist):
    # one process, one machine, one thread count: the same kernels in the same order, also under bf16 autocast
    # with channels-last (what the fast preset uses), so a rerun reproduces every number bit for bit
    settings = dict(epochs=2, amp="bf16", channels_last=True)
    engine.train(config(tmp_path, fmnist, out=str(tmp_path / "a"), **settings), tiny_model)
    engine.train(config(tmp_path, fmnist, out=str(tmp_path / "b"), **settings), tiny_model)
    timing = {"img_per_s", "train_s", "wall_s"}
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]  # noqa: E731
    assert strip(read_metrics(tmp_path / "a")) == strip(read_metrics(tmp_path / "b"))
    a, b = (engine.load_checkpoint(tmp_path / r / engine.CHECKPOINT)["model"] for r in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_out_dir_and_resume_guards(tmp_path, fmnist):
    engine.train(config(tmp_path, fmnist, epochs=1), tiny_model)
    with pytest.raises(ValueError, match="already holds a run; pass `resume` .* or `force`"):
        engine.train(config(tmp_path, fmnist, epochs=1), tiny_model)
    with pytest.raises(ValueError, match=r"other settings \(lr: 0.05 → 0.1\)"):
        engine.train(config(tmp_path, fmnist, epochs=1, lr=0.1, resume=True), tiny_model)
    engine.train(config(tmp_path, fmnist, epochs=1, lr=0.1, force=True), tiny_model)
    assert len(list((tmp_path / "run").glob("events.out.tfevents.*"))) == 1
    with pytest.raises(FileNotFoundError, match="nothing to resume: .*checkpoint.pt does not exist"):
        engine.train(config(tmp_path, fmnist, out=str(tmp_path / "empty"), resume=True), tiny_model)
    # a run stopped in its first epoch (Ctrl-C) left metrics and events but no checkpoint: both ways say `force`
    (tmp_path / "run" / engine.CHECKPOINT).unlink()
    with pytest.raises(ValueError, match="stopped before its first checkpoint .*`force`"):
        engine.train(config(tmp_path, fmnist, epochs=1, lr=0.1), tiny_model)
    with pytest.raises(FileNotFoundError, match="stopped before its first checkpoint.*`force` instead of `resume`"):
        engine.train(config(tmp_path, fmnist, epochs=1, lr=0.1, resume=True), tiny_model)


def test_penalty_is_added_to_the_loss(tmp_path, fmnist):
    def weight_norm(model):
        return sum((p**2).sum() for p in model.parameters() if p.ndim > 1)

    built = []
    build = lambda info: built.append(tiny_model(info)) or built[-1]  # noqa: E731
    engine.train(config(tmp_path, fmnist, epochs=1, out=str(tmp_path / "a")), build)
    engine.train(
        config(tmp_path, fmnist, epochs=1, out=str(tmp_path / "b"), penalty_weight=1.0), build, regularizer=weight_norm
    )
    assert weight_norm(built[1]) < 0.8 * weight_norm(built[0])
    assert "penalty" not in read_metrics(tmp_path / "a")[0]
    # the recorded penalty is the mean over the epoch's steps of weight_norm(model): between its values at the
    # start (the seed-0 init, as the engine builds it) and at the end of the epoch, which decrease under the penalty
    torch.manual_seed(0)
    with torch.no_grad():
        start = float(weight_norm(tiny_model(dataset_info("fashion-mnist"))))
        end = float(weight_norm(built[1]))
    assert end < read_metrics(tmp_path / "b")[0]["penalty"] < start
    with pytest.raises(ValueError, match="needs a regularizer"):
        engine.train(config(tmp_path, fmnist, penalty_weight=1.0, out=str(tmp_path / "c")), tiny_model)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_and_channels_last(tmp_path, fmnist, amp):
    reference = engine.train(config(tmp_path, fmnist, epochs=1, out=str(tmp_path / "fp32")), tiny_model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = engine.train(config(tmp_path, fmnist, epochs=1, amp=amp, channels_last=True), tiny_model)
    # fp16 on a CPU trains, but says that it is usually slow there and what to use instead
    slow = [w for w in caught if "`amp` fp16 on a CPU" in str(w.message) and "`amp` auto takes bf16" in str(w.message)]
    assert len(slow) == (amp == "fp16")
    # Same data, init and steps: the losses agree to a few roundings of the low-precision dtype (u = 2^-9 for
    # bf16, 2^-11 for fp16, relative), far less than a wrong gradient scale or a missed step would move them;
    # and they differ from float32's, so autocast really ran.
    u = torch.finfo(torch.bfloat16 if amp == "bf16" else torch.float16).eps / 2
    for key in ("train_loss", "test_loss"):
        assert summary[key] == pytest.approx(reference[key], rel=4 * u), key
    assert summary["train_loss"] != reference["train_loss"]
    scaler = engine.load_checkpoint(tmp_path / "run" / engine.CHECKPOINT)["scaler"]
    assert ("scale" in scaler) == (amp == "fp16")  # fp16 needs (and saves) a gradient scaler


@pytest.mark.parametrize("avx512_bf16, amx, expected", [(False, False, "none"), (True, False, "bf16"),
                                                        (False, True, "bf16")])
def test_amp_auto_picks_bf16_only_on_cpus_with_native_bf16(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    cpu = torch.device("cpu")
    assert engine.resolve_amp("auto", cpu) == expected
    assert [engine.resolve_amp(a, cpu) for a in ("none", "bf16", "fp16")] == ["none", "bf16", "fp16"]


def same_weights(run_a, run_b) -> bool:
    a, b = (engine.load_checkpoint(r / engine.CHECKPOINT)["model"] for r in (run_a, run_b))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def forced_timing(monkeypatch, bf16_s: float, float32_s: float = 1.0) -> list[int]:
    """Make ``--amp auto``'s measurement report these step times; returns a list that grows by one per measurement."""
    calls: list[int] = []

    def fake(config, model, input_shape, device, regularizer):
        calls.append(input_shape[0])
        return {"none": float32_s, "bf16": bf16_s}

    monkeypatch.setattr(engine, "_amp_step_seconds", fake)
    monkeypatch.setattr(engine, "_AMP_CHOICES", {})
    return calls


@pytest.mark.parametrize("bf16_s, expected", [(0.95, "none"), (0.91, "none"), (0.85, "bf16")])
def test_amp_auto_on_a_cpu_trains_in_bf16_only_where_it_measured_bf16_faster(tmp_path, fmnist, monkeypatch, capsys,
                                                                            bf16_s, expected):
    # the CPU's flags say nothing: a CPU with native bf16 where bf16 is slower trains in float32
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    calls = forced_timing(monkeypatch, bf16_s)
    engine.train(config(tmp_path, fmnist, amp="auto", epochs=1), tiny_model)
    assert calls == [16]  # measured once, on the run's batch
    meta = json.loads((tmp_path / "run" / engine.CONFIG).read_text())
    assert (meta["config"]["amp"], meta["amp"]) == ("auto", expected)
    assert meta["amp_choice"]["asked"] == "auto" and meta["amp_choice"]["chosen"] == expected
    assert meta["amp_choice"]["step_s"] == {"none": 1.0, "bf16": bf16_s}
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("amp auto:")]
    assert len(printed) == 1 and ("float32" if expected == "none" else "bf16") in printed[0]
    assert "not 10% faster" in printed[0] if expected == "none" else "× faster" in printed[0]
    # it really ran so: bit for bit the run of the precision asked explicitly (the measurement left it untouched)
    engine.train(config(tmp_path, fmnist, amp=expected, epochs=1, out=str(tmp_path / "same")), tiny_model)
    engine.train(config(tmp_path, fmnist, amp="bf16" if expected == "none" else "none", epochs=1,
                        out=str(tmp_path / "other")), tiny_model)
    assert same_weights(tmp_path / "run", tmp_path / "same") and not same_weights(tmp_path / "run", tmp_path / "other")


def test_amp_auto_is_measured_once_per_model_and_shape_and_a_resumed_run_keeps_its_choice(tmp_path, fmnist,
                                                                                          monkeypatch, capsys):
    calls = forced_timing(monkeypatch, bf16_s=0.5)
    with pytest.raises(Killed):
        engine.train(config(tmp_path, fmnist, amp="auto", epochs=3), tiny_model, on_epoch_end=kill_after(1))
    assert json.loads((tmp_path / "run" / engine.CONFIG).read_text())["amp"] == "bf16"
    # another run of the same model and batch in this process takes the cached choice; another batch measures
    engine.train(config(tmp_path, fmnist, amp="auto", epochs=1, out=str(tmp_path / "b")), tiny_model)
    engine.train(config(tmp_path, fmnist, amp="auto", epochs=1, batch_size=8, out=str(tmp_path / "c")), tiny_model)
    assert calls == [16, 8]
    # a new process (an empty cache) on a day when bf16 measures slower: the resumed run keeps bf16, unmeasured
    calls = forced_timing(monkeypatch, bf16_s=2.0)
    capsys.readouterr()
    engine.train(config(tmp_path, fmnist, amp="auto", epochs=3, resume=True), tiny_model)
    assert calls == [] and "amp auto: bf16 (recorded by the run being resumed" in capsys.readouterr().out
    meta = json.loads((tmp_path / "run" / engine.CONFIG).read_text())
    assert meta["amp"] == "bf16" and meta["amp_choice"]["step_s"] == {"none": 1.0, "bf16": 0.5}
    engine.train(config(tmp_path, fmnist, amp="bf16", epochs=3, out=str(tmp_path / "whole")), tiny_model)
    assert same_weights(tmp_path / "run", tmp_path / "whole")  # exactly the uninterrupted bf16 run
    # an explicit other precision is another run
    with pytest.raises(ValueError, match="amp: 'auto' → 'fp16'"):
        engine.train(config(tmp_path, fmnist, amp="fp16", epochs=3, resume=True), tiny_model)


def test_amp_measurement_times_real_steps_of_a_copy_and_leaves_the_model_alone():
    info = dataset_info("fashion-mnist")
    torch.manual_seed(0)
    model = tiny_model(info)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    seconds = engine._amp_step_seconds(TrainConfig(), model, (8, 1, 28, 28), torch.device("cpu"), None)
    assert set(seconds) == {"none", "bf16"} and all(0 < s < 10 for s in seconds.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # weights and BN statistics
    assert torch.equal(torch.get_rng_state(), rng) and all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------------------------------ failures


class Poisonable(nn.Module):
    """The tiny model, whose output turns NaN once ``poisoned`` is set."""

    def __init__(self, info):
        super().__init__()
        self.net, self.poisoned = tiny_model(info), False

    def forward(self, x):
        return self.net(x) * (math.nan if self.poisoned else 1.0)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, fmnist):
    built = []

    def poison_after_epoch_1(record):
        built[0].poisoned = True

    ckpt = tmp_path / "run" / engine.CHECKPOINT
    with pytest.raises(engine.NonFiniteLossError) as info:
        engine.train(
            config(tmp_path, fmnist, epochs=3),
            lambda i: built.append(Poisonable(i)) or built[0],
            on_epoch_end=poison_after_epoch_1,
        )
    message = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in message
    assert "nan in epoch 2" in message and f"last good checkpoint {ckpt} (epoch 1) is intact" in message
    assert engine.load_checkpoint(ckpt)["epoch"] == 1
    assert len(read_metrics(tmp_path / "run")) == 1


def test_failed_save_keeps_the_old_checkpoint_and_leaves_no_temp_file(tmp_path, fmnist, monkeypatch):
    ckpt = tmp_path / "run" / engine.CHECKPOINT

    def disk_full(obj, f):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    def fill_disk(record):
        monkeypatch.setattr(storage.torch, "save", disk_full)

    with pytest.raises(OSError, match=f"could not write {ckpt}: No space left on device"):
        engine.train(config(tmp_path, fmnist), tiny_model, on_epoch_end=fill_disk)
    monkeypatch.undo()
    assert engine.load_checkpoint(ckpt)["epoch"] == 1
    assert sorted(p.name for p in ckpt.parent.iterdir() if p.name.endswith(".tmp")) == []


def test_crafted_checkpoint_runs_no_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # creating the marker stands in for arbitrary code

    for i, write in enumerate(
        [
            lambda p: torch.save({"format": storage.FORMAT, "model": Payload()}, p),
            lambda p: p.write_bytes(pickle.dumps({"format": storage.FORMAT, "x": Payload()}, protocol=2)),
        ]
    ):
        marker, path = tmp_path / f"pwned{i}", tmp_path / f"evil{i}.pt"
        write(path)
        with pytest.raises(engine.CheckpointError, match=f"{path}: .*pickle.* could run code") as info:
            engine.load_checkpoint(path)
        assert info.value.kind == "objects" and "weights_only=False" not in str(info.value)
        assert not marker.exists()
        if i == 0:  # the control: loading it without weights_only does run the payload
            torch.load(path, weights_only=False)
            assert marker.exists()


def test_corrupt_truncated_and_foreign_checkpoints(tmp_path, fmnist):
    engine.train(config(tmp_path, fmnist, epochs=1), tiny_model)
    good = (tmp_path / "run" / engine.CHECKPOINT).read_bytes()
    cases = {"truncated.pt": good[: len(good) // 2], "garbage.pt": bytes(range(256)) * 4}
    kinds = {"truncated.pt": ("damaged", "a damaged PyTorch file"), "garbage.pt": ("foreign", "not a PyTorch")}
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(engine.CheckpointError) as info:
            engine.load_checkpoint(tmp_path / name)
        assert str(info.value).startswith(f"{tmp_path / name}: ") and "\n" not in str(info.value)
        assert info.value.kind == kinds[name][0] and kinds[name][1] in str(info.value)
    torch.save(tiny_model(dataset_info("fashion-mnist")).state_dict(), tmp_path / "foreign.pt")
    with pytest.raises(engine.CheckpointError, match="foreign.pt: a state dict .*not a pdeconv run's checkpoint"):
        engine.load_checkpoint(tmp_path / "foreign.pt")
    # a valid checkpoint of another architecture cannot be resumed into this one
    wide = lambda info: nn.Sequential(nn.Flatten(), nn.Linear(784, info.num_classes))  # noqa: E731
    with pytest.raises(engine.CheckpointError, match="does not fit this model"):
        engine.train(config(tmp_path, fmnist, epochs=1, resume=True), wide)


def test_checkpoint_rng_state_roundtrip():
    import random

    import numpy as np

    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    state = storage.rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    storage.set_rng_state(state)
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


# ------------------------------------------------------------------------------------------ distributed


def _ddp_worker(rank: int, world: int, port: int, data_dir: str, out: str, results: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )  # what torchrun sets
    torch.set_num_threads(1)
    built = []
    cfg = TrainConfig(data_dir=data_dir, epochs=2, batch_size=16, lr=0.05, out=out, device="cpu", progress=False)
    summary = engine.train(cfg, lambda info: built.append(tiny_model(info)) or built[0])
    torch.save({"state": built[0].state_dict(), "summary": summary}, os.path.join(results, f"rank{rank}.pt"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_gloo_end_with_identical_parameters(tmp_path, fmnist):
    out = tmp_path / "run"
    args = (2, _free_port(), str(fmnist), str(out), str(tmp_path))
    mp.start_processes(_ddp_worker, args=args, nprocs=2, join=True, start_method="fork")  # fork: no re-imports
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(r0["state"][k], r1["state"][k]) for k in r0["state"])
    assert r0["summary"] == {
        **r1["summary"],
        "train_img_per_s": r0["summary"]["train_img_per_s"],
        "wall_s": r0["summary"]["wall_s"],
    }  # metrics reduced over both ranks
    saved = engine.load_checkpoint(out / engine.CHECKPOINT)
    assert all(torch.equal(saved["model"][k], r0["state"][k]) for k in saved["model"])
    assert len(read_metrics(out)) == 2 and len(list(out.glob("events.out.tfevents.*"))) == 1  # rank 0 only
    meta = json.loads((out / engine.CONFIG).read_text())
    assert meta["world_size"] == 2


def test_a_finished_run_is_extended_with_a_constant_schedule_and_told_why_not_otherwise(tmp_path, fmnist):
    engine.train(config(tmp_path, fmnist, epochs=1, schedule="constant"), tiny_model)
    summary = engine.train(config(tmp_path, fmnist, epochs=2, schedule="constant", resume=True), tiny_model)
    assert summary["epochs"] == 2 and [r["epoch"] for r in read_metrics(tmp_path / "run")] == [1, 2]
    # exact: the same as a run of two epochs from the start (the constant schedule does not know the length)
    engine.train(config(tmp_path, fmnist, epochs=2, schedule="constant", out=str(tmp_path / "straight")), tiny_model)
    a, b = (engine.load_checkpoint(tmp_path / r / engine.CHECKPOINT)["model"] for r in ("run", "straight"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    engine.train(config(tmp_path, fmnist, epochs=1, out=str(tmp_path / "cos")), tiny_model)
    with pytest.raises(ValueError, match="1 epochs under the cosine schedule, which spans the run's length.*"
                                         "`schedule` constant"):
        engine.train(config(tmp_path, fmnist, epochs=2, out=str(tmp_path / "cos"), resume=True), tiny_model)


def test_a_figure_is_written_whole_or_not_at_all(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    path = tmp_path / "plot.png"
    storage.write_figure(path, fig)
    first = path.read_bytes()
    assert first.startswith(b"\x89PNG")

    class Broken(Figure):
        def savefig(self, f, **kwargs):
            f.write(b"\x89PNG half")
            raise RuntimeError("the drawing failed")

    with pytest.raises(RuntimeError, match="the drawing failed"):
        storage.write_figure(path, Broken())
    assert path.read_bytes() == first and [p.name for p in tmp_path.iterdir()] == ["plot.png"]  # no temp left
    storage.write_figure(tmp_path / "plot.svg", fig)
    assert (tmp_path / "plot.svg").read_text().lstrip().startswith("<?xml")  # the format the suffix names


def test_a_validation_split_is_evaluated_every_epoch_and_recorded(tmp_path, fmnist, capsys):
    summary = engine.train(config(tmp_path, fmnist, val_split=16), tiny_model)
    rows = read_metrics(tmp_path / "run")
    assert all({"val_loss", "val_acc", "test_loss", "test_acc"} <= r.keys() for r in rows)
    assert all(r["val_acc"] in {k / 16 for k in range(17)} for r in rows)  # an accuracy over 16 images
    assert json.loads((tmp_path / "run" / engine.CONFIG).read_text())["config"]["val_split"] == 16
    best = max(rows, key=lambda r: r["val_acc"])
    assert (summary["val_acc"], summary["best_val_acc"], summary["best_val_epoch"]) == (
        rows[-1]["val_acc"], best["val_acc"], best["epoch"])
    assert "val loss" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"`val_split` must be at least 1"):
        config(tmp_path, fmnist, val_split=0)
    # loaders a caller gives must bring the validation set the config asks for
    loaders = data.build_loaders("fashion-mnist", data_dir=fmnist, batch_size=16)
    with pytest.raises(ValueError, match=r"no validation loader \(\.val\)"):
        engine.train(config(tmp_path, fmnist, val_split=16, out=str(tmp_path / "other")), tiny_model,
                     loaders=tuple(loaders))


def test_every_setting_has_one_role_and_the_sets_that_decide_a_run_come_from_it():
    from dataclasses import fields

    from pdeconv.cli import _ENGINE_SKIP
    from pdeconv.experiment.report import shared_settings

    roles = {f.name: f.metadata["role"] for f in fields(TrainConfig)}
    assert set(roles.values()) == set(engine.ROLES)
    assert engine.settings_of("run") == {"variant", "seed", "penalty_weight"}
    assert {"compile", "deterministic", "threads", "device", "data_dir", "out"} <= engine.settings_of("placement")
    assert {"val_split", "amp", "channels_last", "epochs", "lr", "dataset"} <= engine.settings_of("identity")
    assert set(shared_settings(TrainConfig())) == engine.settings_of("identity")
    assert _ENGINE_SKIP == engine.settings_of("run") | {"model", "out"}  # the flags compare/train set themselves
    with pytest.raises(ValueError, match="unknown role"):
        engine.settings_of("other")
