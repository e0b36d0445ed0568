"""`pdeconv compare` and `pdeconv train` end to end on a tiny Fashion-MNIST-format data set."""

import csv
import json
from dataclasses import fields

import pytest
import torch

from pdeconv import engine, experiment, run
from pdeconv.cli import main


@pytest.fixture
def data_dir(tmp_path, make_fashion_mnist):
    return make_fashion_mnist(tmp_path / "data", 64, 32)


def _compare(data_dir, out, *extra):
    return main(
        ["compare", "--variants", "baseline,varcoef", "--seeds", "2", "--epochs", "1", "--batch-size", "32",
         "--data-dir", str(data_dir), "--out", str(out), "--no-progress", *extra]
    )


def test_compare_writes_results_report_and_plots_then_skips(tmp_path, data_dir, capsys):
    out = tmp_path / "exp"
    assert _compare(data_dir, out) == 0
    printed = capsys.readouterr().out
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["variant"], r["seed"]) for r in rows] == [("baseline", "0"), ("baseline", "1"),
                                                         ("varcoef", "0"), ("varcoef", "1")]
    assert list(rows[0]) == experiment.RESULT_COLUMNS
    # the report's numbers are the CSV's: mean accuracy per variant and the difference to baseline
    report = (out / "report.md").read_text()
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| variant |"))  # the main table
    block = lines[start:]
    block = block[:next(i for i, line in enumerate(block) if not line.startswith("|"))]
    columns = [c.strip() for c in block[0].strip("|").split("|")]
    table = {cells[0]: dict(zip(columns, cells)) for line in block[2:]
             for cells in [[c.strip() for c in line.strip("|").split("|")]]}
    accs = {v: [float(r["test_acc"]) for r in rows if r["variant"] == v] for v in ("baseline", "varcoef")}
    for v, a in accs.items():
        assert table[v]["test acc % (mean ± std)"].split(" ± ")[0] == f"{100 * sum(a) / 2:.2f}"
        assert table[v]["params"] == f"{int(rows[0 if v == 'baseline' else 2]['params']):,}"
    delta = 100 * (sum(accs["varcoef"]) - sum(accs["baseline"])) / 2
    assert table["varcoef"]["Δ vs baseline"] == f"{delta:+.2f}"
    assert "learned PDE" in report and (out / "accuracy_per_epoch.png").stat().st_size > 0
    assert (out / "accuracy_vs_hyperbolicity.png").exists() and "| variant | hyperbolicity |" in report
    assert all(0 <= float(r["hyperbolicity"]) <= 1 for r in rows)  # every run's trained model, analysed
    assert (out / "accuracy_vs_flops.png").exists() and "| baseline |" in printed
    assert "![paired_differences](paired_differences.png)" in report and (out / "paired_differences.png").exists()
    # counted by hand for ResNet-20 with 1 input channel: 269,722 parameters less 2·16·9 in the stem; the
    # fields add 6 monomial weights per channel of 2 layers per block (3 blocks each of 16, 32, 64 channels)
    assert int(rows[0]["params"]) == 269_434 and int(rows[2]["params"]) == 269_434 + 2 * 6 * 3 * (16 + 32 + 64)
    # forward FLOPs per image at 28×28: 2 × the multiply-adds of stem 1·16·9·28², six 16·16·9·28², 16·32·9·14²
    # and five 32·32·9·14², 32·64·9·7² and five 64·64·9·7², fc 64·10 = 2 × 30,821,248; the fields a(x, y) are
    # computed once per batch, so one more image costs varcoef the same
    assert int(rows[0]["flops"]) == int(rows[2]["flops"]) == 2 * 30_821_248

    checkpoints = sorted((out / "runs").glob("*/seed*/checkpoint.pt"))
    mtimes = [p.stat().st_mtime_ns for p in checkpoints]
    assert _compare(data_dir, out) == 0
    assert len(checkpoints) == 4 and [p.stat().st_mtime_ns for p in checkpoints] == mtimes  # nothing retrained
    with open(out / "results.csv") as f:
        assert list(csv.DictReader(f)) == rows


def test_a_variant_with_its_own_learning_rate_trains_at_it_and_is_paired_with_the_reference(tmp_path, data_dir,
                                                                                             capsys):
    """`baseline+lr=0.2` is the baseline's architecture (the same initial weights for a seed) trained at peak rate
    0.2 while the experiment's rate is 0.05: its runs record 0.2, the others 0.05, and the report says the rate is
    set per variant instead of listing it as shared. A `--lr` that contradicts a variant's own is refused."""
    out = tmp_path / "exp"
    assert main(["compare", "--variants", "baseline,baseline+lr=0.2", "--seeds", "1", "--epochs", "1",
                 "--batch-size", "32", "--lr", "0.05", "--data-dir", str(data_dir), "--out", str(out),
                 "--no-progress"]) == 0
    capsys.readouterr()
    rates = {v: json.loads((out / "runs" / v / "seed0" / engine.CONFIG).read_text())["config"]["lr"]
             for v in ("baseline", "baseline+lr=0.2")}
    assert rates == {"baseline": 0.05, "baseline+lr=0.2": 0.2}
    first = {v: torch.load(out / "runs" / v / "seed0" / engine.CHECKPOINT, weights_only=True)["epoch"]
             for v in rates}
    assert first == {"baseline": 1, "baseline+lr=0.2": 1}
    report = (out / "report.md").read_text()
    shared = next(line for line in report.splitlines() if line.startswith("Settings shared by every run"))
    assert "`lr=" not in shared and "Set per variant: `lr` (baseline: 0.05, baseline+lr=0.2: 0.2)." in shared
    assert "| baseline+lr=0.2 | 1 |" in report
    # two rates in one spec are refused before anything trains (not when that variant's turn comes)
    assert main(["compare", "--variants", "baseline,seed+lr=0.1+lr=0.4", "--seeds", "1", "--epochs", "1",
                 "--data-dir", str(data_dir), "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
    assert "sets lr twice" in capsys.readouterr().err and not (tmp_path / "bad" / "runs").exists()
    with pytest.raises(ValueError, match="variant 'seed\\+lr=0.4' sets its own, 0.4"):
        run.make_config(variant="seed+lr=0.4", lr=0.1)
    assert run.make_config(variant="seed+lr=0.4", preset="fast").lr == 0.4  # the variant's rate beats the preset's


def test_a_finished_run_keeps_its_learned_pde_before_the_experiment_ends(tmp_path, data_dir, monkeypatch, capsys):
    """A comparison stopped during its second run (a session cut off): the first run's learned_pde.json is already
    written, so the summary survives when the (uncommitted) checkpoint is lost."""
    from pdeconv.experiment.results import LEARNED_PDE

    real, calls = run.train, []

    def train(config, **kwargs):
        calls.append(config.variant)
        if len(calls) == 2:
            raise KeyboardInterrupt  # stopped during the second run
        return real(config, **kwargs)

    monkeypatch.setattr(run, "train", train)
    code = _compare(data_dir, tmp_path / "exp")
    assert code != 0 and len(calls) == 2
    first = tmp_path / "exp" / "runs" / "baseline" / "seed0"
    assert (first / LEARNED_PDE).is_file() and not (tmp_path / "exp" / "results.csv").exists()
    assert json.loads((first / LEARNED_PDE).read_text())["summary"]["hyperbolicity"] >= 0


def test_compare_resumes_an_unfinished_run(tmp_path, data_dir, capsys):
    out = tmp_path / "exp"
    args = ["--variants", "baseline", "--seeds", "1", "--batch-size", "32", "--data-dir", str(data_dir),
            "--out", str(out), "--no-progress"]
    assert main(["compare", *args, "--epochs", "1"]) == 0
    # the same experiment with more epochs is another experiment: refused without --force
    assert main(["compare", *args, "--epochs", "2"]) == 2
    assert "other settings" in capsys.readouterr().err
    # an interrupted run (its metrics say 1 of 2 epochs) resumes from its checkpoint
    settings = json.loads((out / "experiment.json").read_text())
    settings["epochs"] = 2
    (out / "experiment.json").write_text(json.dumps(settings))
    run = out / "runs" / "baseline" / "seed0"
    meta = json.loads((run / "config.json").read_text())
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    meta["config"]["epochs"] = ckpt["config"]["epochs"] = 2
    (run / "config.json").write_text(json.dumps(meta))
    torch.save(ckpt, run / "checkpoint.pt")
    assert main(["compare", *args, "--epochs", "2"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_compare_refuses_a_foreign_directory_and_bad_names(tmp_path, data_dir, capsys):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert _compare(data_dir, tmp_path / "busy") == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["compare", "--variants", "baseline,nope", "--out", str(tmp_path / "x")]) == 2
    assert "valid ones" in capsys.readouterr().err
    assert main(["compare", "--seeds", "0", "--out", str(tmp_path / "x")]) == 2
    assert main(["compare", "--model", "resnet9000", "--out", str(tmp_path / "x")]) == 2
    assert "choose one of" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_train_preset_sets_the_recipe_and_options_override_it(tmp_path, data_dir):
    out = tmp_path / "fast"
    assert main(["train", "--preset", "fast", "--epochs", "1", "--batch-size", "32", "--amp", "none",
                 "--data-dir", str(data_dir), "--out", str(out), "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())["config"]
    fast = run.PRESETS["fast"]
    assert (config["epochs"], config["batch_size"], config["amp"]) == (1, 32, "none")  # given on the command line
    assert config["model"] == fast.model and config["variant"] == "baseline"
    for name in ("lr", "schedule", "label_smoothing", "tta_flip", "channels_last", "weight_decay"):
        assert config[name] == getattr(fast, name), name


def test_presets_hold_only_train_config_fields():
    names = {f.name for f in fields(engine.TrainConfig)}
    for preset in run.PRESETS.values():
        assert set(preset.train_settings()) <= names
        engine.TrainConfig(**preset.train_settings())  # valid values


def test_train_cli_runs_and_reports(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    args = ["train", "--variant", "hyperbolic", "--epochs", "2", "--batch-size", "32", "--data-dir", str(data_dir),
            "--out", str(out), "--no-progress"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "final test accuracy" in lines[-1]
    # after the first epoch: the time left (of the one run), measured; none after the last
    estimates = [i for i, line in enumerate(lines) if " left at " in line]
    assert len(estimates) == 1 and lines[estimates[0] - 1].startswith("epoch 1/2")
    assert lines[estimates[0]].startswith("1 run, about ")
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["variant"] == "hyperbolic" and config["penalty_weight"] > 0  # the variant's own weight
    assert main(args) == 2  # the directory holds a run now
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "none"), "--out",
                 str(tmp_path / "r2"), "--no-progress"]) == 2


@pytest.mark.parametrize("command", ["train", "compare", "probe", "analyze", "discover", "demo", "doctor", None])
def test_every_help_page_renders(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"] if command else ["--help"])
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_a_wrong_data_dir_is_an_error_and_a_run_records_the_data_it_read(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data-dir", str(tmp_path / "nonexistent" / "fm"), "--epochs", "1", "--out", str(out),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nonexistent/fm does not exist" in err and not out.exists()
    assert main(["train", "--data-dir", str(data_dir), "--epochs", "1", "--batch-size", "32", "--out", str(out),
                 "--no-progress"]) == 0
    dataset = json.loads((out / "config.json").read_text())["dataset"]
    assert dataset["source"] == str(data_dir) and dataset["fingerprint"].startswith("sha256:")


# ------------------------------------------------------------------------------------- paired comparisons


def _base(data_dir, **kw):
    from pdeconv import run

    settings = dict(epochs=1, batch_size=32, data_dir=str(data_dir), progress=False, threads="1")
    return run.make_config(**(settings | kw))


def test_the_same_model_under_two_names_gives_a_paired_difference_of_exactly_zero(tmp_path, data_dir, capsys):
    # bc=dirichlet is the baseline's own zero padding: seed s gives both the same data order, augmentation and
    # initial weights, and this one process the same kernels, so every paired difference is 0
    result = experiment.compare(["baseline", "bc=dirichlet"], [0, 1], tmp_path / "exp", base=_base(data_dir))
    c = result.comparisons["bc=dirichlet"]
    assert (c.mean, c.ci, c.p) == (0.0, (0.0, 0.0), 1.0) and result.reference == "baseline"
    accs = [r["test_acc"] for r in result.rows]
    assert accs[:2] == accs[2:] and accs[0] != accs[1]  # the seeds differ, the variants do not
    # identical twins are equivalent within any margin (two one-sided tests), not merely "not resolved"
    assert "is equivalent to baseline within ±0.2 points" in result.verdicts[0]
    assert "equivalent within ±0.2 points: bc=dirichlet" in capsys.readouterr().out


def test_a_variant_starts_from_the_baselines_weights_where_it_shares_layers():
    from pdeconv import run
    from pdeconv.data import dataset_info

    info = dataset_info("fashion-mnist")
    models = {}
    for variant in ("baseline", "varcoef", "seed"):
        torch.manual_seed(3)  # what the engine does before building
        models[variant] = run._paired_model(run.make_config(variant=variant, seed=3), info).state_dict()
    base = models["baseline"]
    varcoef, seed = models["varcoef"], models["seed"]
    assert all(torch.equal(varcoef[k], v) for k, v in base.items())  # every baseline layer, fields added
    assert set(varcoef) - set(base) and all("mix" in k for k in set(varcoef) - set(base))
    shared = [k for k in base if k in seed and seed[k].shape == base[k].shape]
    assert "conv1.weight" in shared and "fc.weight" in shared and "layer1.0.bn1.weight" in shared
    assert all(torch.equal(seed[k], base[k]) for k in shared)
    assert "layer1.0.conv1.weight" not in shared  # a DifferentialConv2d keeps its own initialisation


def test_automatic_seeds_add_runs_until_the_target_or_the_cap(tmp_path, data_dir, capsys, monkeypatch):
    import importlib

    from pdeconv.experiment.stats import Paired

    compare_module = importlib.import_module("pdeconv.experiment.compare")  # the module, not the function

    out = tmp_path / "exp"
    # on 32 test images the real intervals may be anything, even [0, 0]: the rule is tested with a wide one
    asked = []

    def wide(out_, variant, reference, plan, runs):
        asked.append({v: list(s) for v, s in plan.items()})
        return Paired(len(plan[variant]), 0.01, 0.02, (-0.05, 0.07), seeds=tuple(plan[variant]), p=0.5)

    monkeypatch.setattr(compare_module, "_paired_of", wide)
    result = experiment.compare(["baseline", "varcoef"], [0, 1], out, base=_base(data_dir), target_ci=1.0,
                                max_seeds=3)
    assert sorted({(r["variant"], r["seed"]) for r in result.rows}) == [
        ("baseline", 0), ("baseline", 1), ("baseline", 2), ("varcoef", 0), ("varcoef", 1), ("varcoef", 2)]
    assert asked == [{"baseline": [0, 1], "varcoef": [0, 1]}, {"baseline": [0, 1, 2], "varcoef": [0, 1, 2]}]
    assert "more seeds (baseline +1, varcoef +1)" in capsys.readouterr().out
    monkeypatch.undo()
    # a target every comparison meets adds nothing, and finished runs are reused
    again = experiment.compare(["baseline", "varcoef"], [0, 1, 2], out, base=_base(data_dir), target_ci=100.0)
    assert again.reached == {"varcoef": True} and len(again.rows) == 6
    assert "training" not in capsys.readouterr().out


def test_compare_options_that_cannot_work_are_refused_at_once(tmp_path, capsys):
    out = tmp_path / "x"
    for args, message in [
        (["--seeds", "auto"], "go together"),
        (["--target-ci", "0.1"], "go together"),
        (["--seeds", "auto", "--target-ci", "-1"], "positive number of accuracy points"),
        (["--seeds", "auto", "--target-ci", "0.1", "--max-seeds", "1"], "at least 2"),
        (["--variants", "baseline,seed", "--reference", "dw4"], "--reference 'dw4' is not among"),
        (["--seeds", "1,1"], "distinct"),
        (["--variants", "dw=two"], "takes an integer"),
    ]:
        assert main(["compare", *args, "--out", str(out)]) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (args, err)
    assert not out.exists()


def test_a_preset_applies_only_when_named_or_when_no_training_option_is_given(monkeypatch, capsys):
    from pdeconv import run

    calls = []  # the CLI calls pdeconv.experiment.compare: record what it asks for instead of training
    monkeypatch.setattr(experiment, "compare", lambda variants, seeds, out, **kw: calls.append((variants, seeds,
                                                                                                out, kw)))
    main(["compare"])
    (variants, seeds, out, kw), = calls
    assert kw["base"].train_subset == run.PRESETS["quick"].train_subset
    assert out == "runs/compare-quick" and seeds == [0, 1, 2]
    assert "settings: preset quick (no training option given)" in capsys.readouterr().out
    calls.clear()
    main(["compare", "--model", "pde_resnet20", "--variants", "baseline,seed", "--seeds", "2", "--epochs", "1"])
    (variants, seeds, out, kw), = calls
    base = kw["base"]
    assert base.train_subset is None and base.epochs == 1 and base.batch_size == 128 and base.lr == 0.1
    assert out == "runs/compare" and seeds == [0, 1] and variants == ["baseline", "seed"]
    printed = capsys.readouterr().out
    assert "no preset (you gave --epochs)" in printed and "all training images" in printed
    calls.clear()
    main(["compare", "--preset", "fast", "--epochs", "3", "--data-dir", "/tmp"])
    base = calls[0][3]["base"]
    assert (base.epochs, base.label_smoothing, base.train_subset) == (3, 0.1, None)
    calls.clear()
    main(["compare", "--data-dir", "/tmp", "--threads", "1"])  # where and how it runs: not a training option
    assert calls[0][3]["base"].train_subset == run.PRESETS["quick"].train_subset
    calls.clear()
    main(["compare", "--seeds", "auto", "--target-ci", "0.2", "--epochs", "1"])
    assert calls[0][1] == [0, 1, 2, 3, 4] and calls[0][3]["target_ci"] == 0.2
    capsys.readouterr()
    main(["compare", "--preset", "fast", "--variants", "baseline+lr=0.1,seed+lr=0.4,hyperbolic", "--val-split", "50"])
    printed = capsys.readouterr().out  # the settings line gives the shared rate; the variants' own are said too
    assert "sgd lr 0.2 (onecycle)" in printed and "but 50 held out for validation" in printed
    assert "where a variant sets its own: baseline+lr=0.1: lr 0.1; seed+lr=0.4: lr 0.4; hyperbolic: penalty 0.1" in (
        printed)


def test_experiments_share_runs_through_a_run_store_and_rebuild_without_checkpoints(tmp_path, data_dir, capsys):
    import os
    from dataclasses import replace

    store, base = tmp_path / "store", _base(data_dir)
    first = experiment.compare(["baseline", "neumann"], [0], tmp_path / "a", base=base, runs=store,
                               command="pdeconv compare (test)")
    capsys.readouterr()
    second = experiment.compare(["baseline", "varcoef"], [0], tmp_path / "b", base=base, runs=store)
    printed = capsys.readouterr().out
    assert "baseline seed 0: finished earlier, skipped" in printed and "varcoef seed 0: training" in printed
    assert second.rows[0]["run"] == os.path.join("..", "store", "baseline", "seed0")
    assert (store / "runs.json").is_file() and not (tmp_path / "b" / "runs").exists()
    report = (tmp_path / "a" / "report.md").read_text()
    assert "Command: `pdeconv compare (test)`" in report and "threads" in report
    # a learned_pde.json from before a quantity was added: recomputed from the checkpoint, kept without one
    from pdeconv.experiment.results import LEARNED_PDE, learned_pde_summary

    kept = store / "neumann" / "seed0" / LEARNED_PDE
    fresh = json.loads(kept.read_text())
    old = {**fresh, "summary": {k: v for k, v in fresh["summary"].items() if k != "field_variation"}}
    old["summary"]["hyperbolicity"] = -1.0
    kept.write_text(json.dumps(old))
    assert learned_pde_summary(kept.parent) == fresh["summary"] and json.loads(kept.read_text()) == fresh
    # what a results/ folder in git keeps: config.json and metrics.jsonl of each run, no checkpoint
    for checkpoint in store.glob("*/seed*/checkpoint.pt"):
        checkpoint.unlink()
    kept.write_text(json.dumps(old))
    assert learned_pde_summary(kept.parent) == old["summary"]
    kept.write_text(json.dumps(fresh))
    again = experiment.compare(["baseline", "neumann"], [0], tmp_path / "a", base=base, runs=store)
    assert again.rows == first.rows and "training" not in capsys.readouterr().out
    assert "no checkpoint" not in (tmp_path / "a" / "report.md").read_text()  # learned_pde.json was kept
    with pytest.raises(ValueError, match="other settings"):
        experiment.compare(["baseline"], [0], tmp_path / "c", base=replace(base, epochs=2), runs=store)


def test_a_run_another_process_is_training_is_left_for_last_then_waited_for(tmp_path, data_dir, capsys, monkeypatch):
    # two compare commands sharing a run store: the run the other one holds is not trained twice at once
    import importlib
    import threading

    from pdeconv import run

    store_module = importlib.import_module("pdeconv.experiment.store")

    store, base = tmp_path / "store", _base(data_dir, epochs=2)
    busy = store / "baseline" / "seed0"
    store_module.claim_directory(store, base, False, meta_name="runs.json")  # "the other process" made the
    other = store_module.lock_run(busy)  # store and trains that run
    assert other is not None and other >= 0 and store_module.lock_run(busy) is None
    train = run.train
    # should the release below never come, let go after a while: the test then fails instead of hanging
    safety = threading.Timer(300, store_module.unlock_run, args=(other,))
    safety.start()

    def train_while_the_other_finishes(config, **kwargs):
        result = train(config, **kwargs)
        if config.variant == "neumann":  # meanwhile the other process finishes its run and lets go of it
            train(run.variant_config(base, "baseline", 0, busy))
            store_module.unlock_run(other)
        return result

    monkeypatch.setattr(run, "train", train_while_the_other_finishes)
    try:
        result = experiment.compare(["baseline", "neumann"], [0], tmp_path / "a", base=base, runs=store)
    finally:
        safety.cancel()
    printed = capsys.readouterr().out
    order = ["baseline seed 0: another process is training it; left for last", "neumann seed 0: training",
             "[waiting] baseline seed 0", "[waited] baseline seed 0: finished meanwhile, skipped"]
    assert all(line in printed for line in order), printed
    assert sorted(printed.index(line) for line in order) == [printed.index(line) for line in order]
    assert [r["variant"] for r in result.rows] == ["baseline", "neumann"]
    # the time left counts only the run this command trains, not the one the other process holds
    estimates = [line for line in printed.splitlines() if " left at " in line]
    assert len(estimates) == 1 and estimates[0].startswith("1 run, about ")
    # released after each run: a later command takes the lock at once
    fd = store_module.lock_run(busy)
    assert fd is not None and fd >= 0 and not store_module._HELD - {fd}
    store_module.unlock_run(fd)


def test_a_forked_worker_does_not_keep_a_run_locked(tmp_path):
    # DataLoader workers fork while their run is locked; a flock lasts while any copy of its descriptor is open
    import importlib
    import multiprocessing
    import time

    store_module = importlib.import_module("pdeconv.experiment.store")
    fd = store_module.lock_run(tmp_path / "run")
    assert fd is not None and fd >= 0
    context = multiprocessing.get_context("fork")
    started = context.Event()

    def work() -> None:  # a worker that outlives its run
        started.set()
        time.sleep(60)

    worker = context.Process(target=work)
    worker.start()
    try:
        assert started.wait(60)  # the fork is done (and its handlers have run in the worker)
        store_module.unlock_run(fd)
        again = store_module.lock_run(tmp_path / "run")  # the worker, still alive, dropped its copy at the fork
        assert again is not None and again >= 0
        store_module.unlock_run(again)
    finally:
        worker.terminate()
        worker.join()


def test_an_unfinished_run_without_its_checkpoint_is_trained_again(tmp_path, data_dir, capsys):
    # what a later session finds of a run interrupted in an earlier one: its small files in git, no checkpoint
    base = _base(data_dir)
    experiment.compare(["baseline"], [0], tmp_path / "exp", base=base)
    run = tmp_path / "exp" / "runs" / "baseline" / "seed0"
    meta = json.loads((run / "config.json").read_text())
    meta["config"]["epochs"] = 2  # it says 1 of 2 epochs: unfinished
    (run / "config.json").write_text(json.dumps(meta))
    (run / "checkpoint.pt").unlink()
    capsys.readouterr()
    result = experiment.compare(["baseline"], [0], tmp_path / "exp", base=base)
    assert "training again (unfinished, no checkpoint here)" in capsys.readouterr().out
    assert len(result.rows) == 1 and (run / "checkpoint.pt").exists()


def test_report_names_where_the_runs_are():
    from pdeconv.experiment.report import _run_home

    assert _run_home([{"run": "runs/baseline/seed0"}, {"run": "runs/neumann/seed0"}]) == "`runs/`"
    shared = _run_home([{"run": "../store-fast/baseline/seed0"}, {"run": "../store-fast/seed/seed1"}])
    assert shared.startswith("`../store-fast/`") and "VARIANT/seedS" in shared


def test_report_says_which_machine_and_code_ran_which_runs(tmp_path):
    """Runs of one experiment trained on two machines and two code revisions (a run store resumed in a later
    session): the report groups them by (device, code), seeds as ranges; an old run without a code record says so."""
    from pdeconv.experiment.report import _seed_ranges, provenance

    def run(variant, seed, device, code, started):
        folder = tmp_path / variant / f"seed{seed}"
        folder.mkdir(parents=True)
        meta = {"device_name": device, "started": started, **({"code": code} if code else {})}
        (folder / engine.CONFIG).write_text(json.dumps(meta))
        return {"variant": variant, "seed": seed, "run": f"{variant}/seed{seed}"}

    rows = [run("baseline", s, "EPYC; 1 threads", None, f"2026-12-07T07:0{s}:00") for s in range(3)]
    rows += [run("seed", 0, "EPYC; 1 threads", None, "2026-12-07T07:05:00")]
    rows += [run("seed", s, "Xeon; 1 threads", "f149451", f"2026-12-07T14:0{s}:00") for s in (1, 2, 4)]
    text = provenance(tmp_path, rows)
    assert text == ("Runs: baseline seeds 0–2; seed seed 0: EPYC; 1 threads, code not recorded, started "
                    "2026-12-07T07:00:00 to 2026-12-07T07:05:00 · seed seeds 1–2, 4: Xeon; 1 threads, code f149451, "
                    "started 2026-12-07T14:01:00 to 2026-12-07T14:04:00.")
    assert _seed_ranges([3]) == "3" and _seed_ranges([5, 0, 1, 7, 6]) == "0–1, 5–7"
    # a run continued later on other code: where it started, then its resumption
    meta = json.loads((tmp_path / "seed" / "seed4" / engine.CONFIG).read_text())
    meta["resumed"] = [{"at": "2026-12-08T09:00:00", "epoch": 6, "code": "abc1234", "device_name": "EPYC; 1 threads"}]
    (tmp_path / "seed" / "seed4" / engine.CONFIG).write_text(json.dumps(meta))
    assert provenance(tmp_path, rows).endswith(
        "2026-12-07T14:04:00. Resumed: seed seed 4 after epoch 6 on 2026-12-08T09:00:00 (EPYC; 1 threads, code "
        "abc1234).")


def test_the_paired_plot_draws_each_seeds_difference_and_the_mean_with_its_interval(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    import numpy as np

    from pdeconv.experiment.plots import _paired_plot
    from pdeconv.experiment.report import comparisons

    acc = {"baseline": [0.90, 0.91, 0.92], "b": [0.91, 0.93, 0.92], "c": [0.80, 0.81, 0.83]}
    rows = [{"variant": v, "seed": s, "test_acc": a} for v, accs in acc.items() for s, a in enumerate(accs)]
    paired_, _ = comparisons(rows, "baseline")
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to read what was drawn
    path = _paired_plot(tmp_path, rows, paired_, "baseline")
    assert path == tmp_path / "paired_differences.png" and path.stat().st_size > 0
    ax = figures[0].axes[0]
    dots = [line for line in ax.lines if line.get_label() == "one seed" or line.get_marker() == "o"]
    drawn = [list(line.get_ydata()) for line in dots]
    expected = [[100 * (acc[v][s] - acc["baseline"][s]) for s in range(3)] for v in ("b", "c")]
    np.testing.assert_allclose(drawn, expected, atol=1e-9)  # points of accuracy, seed by seed
    means = [line for line in ax.lines if line.get_marker() == "s"]
    np.testing.assert_allclose([m.get_ydata()[0] for m in means], [100 * paired_[v].mean for v in ("b", "c")])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["b", "c"]


def test_runs_with_different_penalty_weights_get_the_score_against_the_weight(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from pdeconv.experiment.plots import plot_experiment

    rows = []
    for variant, weight, scores in (("baseline", 0.0, [0.36, 0.38]), ("penalty=1", 1.0, [0.7, 0.8]),
                                    ("penalty=10", 10.0, [0.95, 0.97])):
        for seed, score in enumerate(scores):
            run = tmp_path / variant / f"seed{seed}"
            run.mkdir(parents=True)
            (run / engine.CONFIG).write_text(json.dumps({"config": {"penalty_weight": weight}}))
            (run / engine.METRICS).write_text(json.dumps({"test_acc": 0.9}) + "\n")
            rows.append({"variant": variant, "seed": seed, "test_acc": 0.9, "flops": 1e6, "hyperbolicity": score,
                         "run": f"{variant}/seed{seed}"})
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figures to read what was drawn
    files = plot_experiment(tmp_path, rows)
    assert files[-1] == tmp_path / "hyperbolicity_vs_penalty.png" and files[-1].stat().st_size > 0
    (means,) = [line for line in figures[-1].axes[0].lines if line.get_marker() == "s"]
    assert list(means.get_xdata()) == [0.0, 1.0, 10.0]
    assert list(means.get_ydata()) == pytest.approx([0.37, 0.75, 0.96])
    for r in rows:  # one weight: no such plot
        (tmp_path / r["run"] / engine.CONFIG).write_text(json.dumps({"config": {"penalty_weight": 0.0}}))
    assert not any(f.name == "hyperbolicity_vs_penalty.png" for f in plot_experiment(tmp_path, rows))


def test_rerunning_compare_where_or_how_fast_reuses_its_runs_and_another_identity_is_refused(tmp_path, data_dir,
                                                                                           capsys):
    out = tmp_path / "exp"
    args = ["compare", "--variants", "baseline", "--seeds", "1", "--epochs", "1", "--batch-size", "32",
            "--data-dir", str(data_dir), "--out", str(out), "--no-progress"]
    assert main([*args, "--threads", "1"]) == 0
    checkpoint = out / "runs" / "baseline" / "seed0" / "checkpoint.pt"
    stamp = checkpoint.stat().st_mtime_ns
    capsys.readouterr()
    for placement in (["--compile"], ["--deterministic"], ["--threads", "2"], []):  # where and how fast: same runs
        assert main([*args, *placement]) == 0, placement
        printed = capsys.readouterr().out
        assert "training →" not in printed and checkpoint.stat().st_mtime_ns == stamp
        if not placement:  # threads auto takes the first run's count, and the command line says which flag changes it
            assert "the count this experiment's first run used (experiment.json; --threads N to change it)" in printed
    for flag, value, name in (("--lr", "0.3", "lr"), ("--val-split", "8", "val_split")):  # what is trained
        assert main([*args, flag, value]) == 2
        err = capsys.readouterr().err
        assert "other settings" in err and f"{name}: " in err, err
    assert checkpoint.stat().st_mtime_ns == stamp


def test_a_run_store_written_by_earlier_code_is_read_and_reused(tmp_path, capsys):
    """results/store-fast was written before settings had roles (its runs.json lists compile and deterministic,
    its runs have no val_split): the current compare reads its baseline seed 0 and reuses it, trains nothing."""
    import shutil
    from pathlib import Path

    committed = Path(__file__).resolve().parents[1] / "results" / "store-fast"
    store = tmp_path / "store"
    shutil.copytree(committed / "baseline" / "seed0", store / "baseline" / "seed0")
    shutil.copy(committed / "runs.json", store / "runs.json")
    assert "compile" in json.loads((store / "runs.json").read_text())
    args = ["compare", "--preset", "fast", "--variants", "baseline", "--seeds", "1", "--runs", str(store),
            "--out", str(tmp_path / "exp"), "--no-progress", "--threads", "1"]
    assert main([*args, "--compile"]) == 0
    printed = capsys.readouterr().out
    assert "training →" not in printed and not (store / "baseline" / "seed0" / "checkpoint.pt").exists()
    with open(tmp_path / "exp" / "results.csv") as f:
        (row,) = list(csv.DictReader(f))
    summary = engine.run_summary(committed / "baseline" / "seed0")
    assert float(row["test_acc"]) == summary["test_acc"] and row["val_acc"] == ""


def test_compare_prints_the_whole_jobs_time_left_after_its_first_epoch_and_as_runs_finish(tmp_path, data_dir, capsys):
    base = _base(data_dir, epochs=2)
    experiment.compare(["baseline", "varcoef"], [0], tmp_path / "exp", base=base)
    lines = capsys.readouterr().out.splitlines()
    estimates = [i for i, line in enumerate(lines) if " left at " in line and "img/s" in line]
    # right after the first run's first epoch (both runs to go), then when the first run is done (one to go)
    assert [lines[i].split(", about")[0] for i in estimates] == ["2 runs", "1 run"]
    assert lines[estimates[0] - 1].startswith("epoch 1/2") and lines[estimates[1] - 1].startswith("epoch 2/2")
    assert "measured on this machine" in lines[estimates[0]]
    # a rerun with one more seed: the finished runs are not part of the job, the two new ones are
    experiment.compare(["baseline", "varcoef"], [0, 1], tmp_path / "exp", base=base)
    printed = capsys.readouterr().out
    estimates = [line for line in printed.splitlines() if " left at " in line]
    assert estimates[0].startswith("2 runs, about") and printed.count("skipped") == 2


def test_the_first_runs_thread_count_is_the_experiments_for_every_later_run_and_rerun(tmp_path, data_dir, capsys,
                                                                                   monkeypatch):
    from dataclasses import replace

    from pdeconv import runtime

    counts = iter([2, 1, 1, 1, 1, 1])  # what the idle cores allow: 2 at the first run's start, 1 from then on
    monkeypatch.setattr(runtime, "auto_threads", lambda interval=0.3: next(counts))
    out, base = tmp_path / "exp", _base(data_dir, threads="auto")

    def used() -> dict[str, str]:
        return {f"{d.parent.name} {d.name}": json.loads((d / "config.json").read_text())["config"]["threads"]
                for d in sorted((out / "runs").glob("*/seed*"))}

    threads = torch.get_num_threads()
    try:
        experiment.compare(["baseline", "varcoef"], [0], out, base=base)
        assert json.loads((out / "experiment.json").read_text())["threads"] == "2"
        assert used() == {"baseline seed0": "2", "varcoef seed0": "2"}
        assert "by this first run; every later run and rerun of this experiment uses it (experiment.json; " \
            "`threads` N to change it)" in capsys.readouterr().out
        # a rerun with one more seed on a busier day: the new runs take the experiment's count too
        experiment.compare(["baseline", "varcoef"], [0, 1], out, base=base)
        assert set(used().values()) == {"2"} and len(used()) == 4
        assert "threads: 2, the count this experiment's first run used" in capsys.readouterr().out
        assert next(counts) == 1  # auto was asked once in all: by the first run
        # another count given: no finished run is trained again (threads say where a run runs, not what it is)
        mtimes = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed*/checkpoint.pt")}
        experiment.compare(["baseline", "varcoef"], [0, 1, 2], out, base=replace(base, threads="1"))
        assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
        assert used()["baseline seed2"] == "1" and json.loads((out / "experiment.json").read_text())["threads"] == "2"
        assert "threads: 1 as given; this experiment's earlier runs used 2" in capsys.readouterr().out
    finally:
        torch.set_num_threads(threads)


def test_a_rerun_with_more_seeds_keeps_the_precision_the_first_seeds_measured(tmp_path, data_dir, monkeypatch, capsys):
    measured = []

    def timing(bf16_s):
        def fake(config, model, input_shape, device, regularizer):
            measured.append(config.seed)
            return {"none": 1.0, "bf16": bf16_s}
        monkeypatch.setattr(engine, "_amp_step_seconds", fake)

    monkeypatch.setattr(engine, "_AMP_CHOICES", {})
    timing(bf16_s=0.5)  # bf16 measures faster on the first day
    out, base = tmp_path / "exp", _base(data_dir, amp="auto")
    experiment.compare(["baseline"], [0], out, base=base)
    assert measured == [0]
    # another process (an empty cache) on a day when bf16 measures slower: the new seed trains in bf16 as well
    monkeypatch.setattr(engine, "_AMP_CHOICES", {})
    timing(bf16_s=2.0)
    experiment.compare(["baseline"], [0, 1], out, base=base)
    amp = [json.loads((out / "runs" / "baseline" / f"seed{s}" / "config.json").read_text())["amp"] for s in (0, 1)]
    assert amp == ["bf16", "bf16"] and measured == [0]
    # the control: a fresh experiment in a fresh process measures, and takes float32
    monkeypatch.setattr(engine, "_AMP_CHOICES", {})
    experiment.compare(["baseline"], [0], tmp_path / "fresh", base=base)
    assert json.loads((tmp_path / "fresh" / "runs" / "baseline" / "seed0" / "config.json").read_text())["amp"] == "none"
    assert measured == [0, 0]
