"""pdeconv.run (how a variant becomes a run) and pdeconv.runtime (threads chosen for the machine as it is)."""

from __future__ import annotations

import json

import pytest
import torch

from pdeconv import engine, run, runtime
from pdeconv.regularize import hyperbolicity_penalty

# ------------------------------------------------------------------------------------------------ run


def test_make_config_takes_the_preset_then_explicit_options_then_the_variants_penalty():
    fast = run.PRESETS["fast"]
    config = run.make_config(variant="seed", preset="fast", epochs=3)
    assert config.epochs == 3 and config.lr == fast.lr and config.tta_flip is fast.tta_flip
    assert config.model == "pde_resnet20" and config.variant == "seed" and config.penalty_weight == 0.0
    assert run.make_config(variant="hyperbolic").penalty_weight == 0.1
    assert run.make_config(variant="hyperbolic", penalty_weight=2.0).penalty_weight == 2.0
    assert run.make_config(variant="baseline+hyperbolic").penalty_weight == 0.1
    plain = run.make_config()
    assert plain.epochs == engine.TrainConfig().epochs and plain.train_subset is None  # no preset: engine defaults


def test_variant_config_and_regularizer():
    base = run.make_config(preset="quick", penalty_weight=0.0)
    hyper = run.variant_config(base, "hyperbolic", 3, "somewhere/run")
    assert (hyper.variant, hyper.seed, hyper.out, hyper.penalty_weight) == ("hyperbolic", 3, "somewhere/run", 0.1)
    assert hyper.epochs == base.epochs and hyper.train_subset == base.train_subset
    assert run.regularizer(hyper) is hyperbolicity_penalty and run.regularizer(base) is None


def test_make_config_errors_name_the_valid_choices():
    with pytest.raises(ValueError, match="unknown training settings \\['epoch'\\]; valid ones: .*epochs"):
        run.make_config(epoch=3)
    with pytest.raises(ValueError, match="unknown model 'resnet20'; valid ones: .*pde_resnet20"):
        run.make_config(model="resnet20")
    with pytest.raises(ValueError, match="unknown preset 'slow'; valid ones: quick, fast, full"):
        run.make_config(preset="slow")
    with pytest.raises(ValueError, match="unknown variant 'dw5'"):
        run.make_config(variant="dw5")


def test_the_settings_line_says_which_training_images_a_run_uses():
    def data(**options):
        line = run.describe_config(engine.TrainConfig(**options))
        return line[line.index("(") + 1:line.index(")")]

    assert data() == "all training images"
    assert data(train_subset=2000) == "a fixed subset of 2,000 training images"
    assert data(val_split=5000) == "all training images but 5,000 held out for validation"
    assert data(val_split=5000, train_subset=2000) == (
        "a fixed subset of 2,000 training images from those left after 5,000 held out for validation")


def test_a_trained_run_comes_back_with_its_weights(tmp_path, make_fashion_mnist):
    data = make_fashion_mnist(tmp_path / "data", 32, 16)
    config = run.make_config(variant="varcoef", epochs=1, batch_size=16, data_dir=str(data), out=str(tmp_path / "r"),
                             progress=False, device="cpu")
    run.train(config)
    model = run.model_from_run(tmp_path / "r")
    saved = engine.load_checkpoint(tmp_path / "r" / engine.CHECKPOINT)["model"]
    assert not model.training and model.variant.name == "varcoef" and model.conv1.in_channels == 1
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())  # the same tensors, copied


# ------------------------------------------------------------------------------------------------ threads


@pytest.fixture
def machine(monkeypatch):
    """A 4-CPU machine whose load the test sets; no OMP_NUM_THREADS, no torchrun."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(runtime, "usable_cpus", lambda: 4)
    load = {"busy": 0.0}
    monkeypatch.setattr(runtime, "busy_cpus", lambda interval=0.3: load["busy"])
    return load


@pytest.mark.parametrize("busy, threads", [(0.0, 4), (0.4, 4), (0.6, 3), (1.3, 3), (2.6, 1), (9.0, 1), (None, 4)])
def test_auto_threads_leaves_the_busy_cpus_alone(machine, busy, threads):
    machine["busy"] = busy
    assert runtime.auto_threads() == threads


def test_auto_threads_respects_the_environment_and_torchrun(machine, monkeypatch):
    machine["busy"] = 3.0
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert runtime.auto_threads() == torch.get_num_threads()  # the user's (or torchrun's) choice stands
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    assert runtime.auto_threads() == 1  # 4 CPUs shared by 3 processes


def test_busy_cpus_reads_the_machine():
    busy = runtime.busy_cpus(0.05)
    assert busy is None or 0.0 <= busy <= (runtime.os.cpu_count() or 1) + 1e-9


def test_set_threads_and_bad_values():
    before = torch.get_num_threads()
    try:
        assert runtime.set_threads(1) == 1 == torch.get_num_threads()
        assert runtime.set_threads(None) == 1
        for bad in (0, "two", -1):
            with pytest.raises(ValueError, match="positive count or 'auto'"):
                runtime.set_threads(bad)
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match=r"`threads` must be a positive count or auto"):
        engine.TrainConfig(threads="many")


def test_cpu_description_names_the_cpu_and_its_cores():
    text = runtime.cpu_description()
    assert f"{runtime.os.cpu_count()} cores" in text and text.split(",")[0].strip()


def test_a_run_records_its_threads_and_a_resumed_run_keeps_them(tmp_path, make_fashion_mnist, machine):
    data = make_fashion_mnist(tmp_path / "data", 32, 16)
    before = torch.get_num_threads()
    try:
        machine["busy"] = 1.0  # 4 CPUs, one busy: auto takes 3
        config = run.make_config(epochs=2, batch_size=16, data_dir=str(data), out=str(tmp_path / "r"),
                                 progress=False, device="cpu")

        def stop(record):
            if record["epoch"] == 1:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            run.train(config, on_epoch_end=stop)
        recorded = json.loads((tmp_path / "r" / engine.CONFIG).read_text())
        assert recorded["config"]["threads"] == "3" and "3 threads" in recorded["device_name"]
        machine["busy"] = 3.0  # the machine got busier: a new run would take 1, the resumed one keeps 3
        run.train(run.make_config(**{**recorded["config"], "resume": True}))
        assert json.loads((tmp_path / "r" / engine.CONFIG).read_text())["config"]["threads"] == "3"
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_a_run_records_its_layer_paths_and_a_resumed_run_restores_them(tmp_path, make_fashion_mnist):
    from pdeconv import autotune

    data = make_fashion_mnist(tmp_path / "data", 32, 16)
    config = run.make_config(variant="dw4", epochs=2, batch_size=16, data_dir=str(data), out=str(tmp_path / "r"),
                             progress=False, device="cpu", threads="1")
    saved = autotune.chosen()
    try:
        autotune.clear()

        def stop(record):
            if record["epoch"] == 1:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            run.train(config, on_epoch_end=stop)
        recorded = json.loads((tmp_path / "r" / engine.CONFIG).read_text())["paths"]
        layers = {k: v for k, v in recorded.items() if k.startswith("DifferentialConv2d|")}
        assert layers and set(layers.values()) <= {"reference", "channels_last", "repeated", "folded"}
        assert engine.load_checkpoint(tmp_path / "r" / engine.CHECKPOINT)["paths"] == recorded
        autotune.clear()  # a new process: nothing measured yet
        run.train(run.make_config(**{**json.loads((tmp_path / "r" / engine.CONFIG).read_text())["config"],
                                     "resume": True}))
        assert all(autotune.chosen()[k] == v for k, v in recorded.items())  # the resumed run took the same paths
    finally:
        autotune.clear()
        autotune.restore(saved)
