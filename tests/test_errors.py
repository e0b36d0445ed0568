"""Errors a user can tell from bugs: a user's mistake is one line and exit status 2; a bug shows its traceback."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pdeconv import engine, run
from pdeconv.cli import UsageError, main
from pdeconv.errors import PdeconvError


def test_the_user_error_family():
    from pdeconv.distributed import DistributedError
    from pdeconv.storage import CheckpointError

    for cls in (UsageError, CheckpointError, DistributedError, engine.NonFiniteLossError):
        assert issubclass(cls, PdeconvError)
    assert issubclass(PdeconvError, ValueError)  # code that catches ValueError around pdeconv calls still works
    with pytest.raises(PdeconvError, match="unknown preset 'nope'; valid ones: quick, fast, full"):
        run.make_config(preset="nope")


def test_a_user_error_is_one_line_and_exit_status_2(tmp_path, capsys):
    assert main(["train", "--epochs", "0", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pdeconv train: error: --epochs must be at least 1")
    assert main(["analyze", str(tmp_path / "no-such-run")]) == 2  # the OS's file errors too
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("bug", [ValueError("too many values to unpack (expected 2)"),
                                 TypeError("'NoneType' object is not callable")])
def test_a_bug_shows_its_traceback(tmp_path, monkeypatch, bug):
    """An internal ValueError or TypeError (a bug deep in training) is not turned into a one-line 'error:'."""

    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr(run, "train", broken)
    monkeypatch.setattr(engine, "train", broken)
    with pytest.raises(type(bug), match=str(bug).split("(")[0].strip()):
        main(["train", "--epochs", "1", "--train-subset", "16", "--out", str(tmp_path / "r"), "--no-progress"])


def test_messages_name_parameters_and_the_cli_shows_their_flags(tmp_path, capsys):
    """Inside the library an error names the parameter a Python caller passes (`kernel_size`); the CLI maps it to
    its flag once (--kernel-size)."""
    import numpy as np

    from pdeconv import discover
    from pdeconv.errors import for_command_line

    assert for_command_line("lower `kernel_size`; `nope` stays", {"kernel_size": "--kernel-size"}) == \
        "lower --kernel-size; `nope` stays"
    with pytest.raises(PdeconvError, match="`epochs` must be at least 1"):
        engine.TrainConfig(epochs=0)
    rng = np.random.default_rng(0)
    data = discover.Dataset.from_array(rng.standard_normal((12, 6)), t=0.1, x=0.5, axes="tx")
    with pytest.raises(PdeconvError, match="lower `kernel_size`"):
        discover.fit(data, kernel_size=9, progress=False)
    np.savez(tmp_path / "small.npz", u=rng.standard_normal((12, 6)), dt=0.1, dx=0.5, space_dims=1)
    assert main(["discover", "fit", str(tmp_path / "small.npz"), "--kernel-size", "9", "--out",
                 str(tmp_path / "out")]) == 2
    assert "lower --kernel-size" in capsys.readouterr().err


def test_the_command_line_maps_each_parameter_to_its_own_flag():
    """An option's dest is the parameter it sets: a --x/--no-x pair maps to --x (not --no-x), a parameter that
    several flags set maps to them all, and a flag spelled otherwise (--var) maps from the Python name."""
    from pdeconv.cli import _flags, build_parser

    train = _flags(build_parser(["train"]), "train")
    assert (train["sync_bn"], train["resume"], train["batch_size"], train["out"]) == \
        ("--sync-bn", "--resume", "--batch-size", "--out")
    fit = _flags(build_parser(["discover"]), "discover")
    assert (fit["complex_part"], fit["variables"], fit["axes"], fit["no_progress"]) == \
        ("--real or --abs", "--var", "--axes", "--no-progress")


def _raised(call) -> str:
    with pytest.raises((PdeconvError, OSError)) as info:
        call()
    return str(info.value)


def test_library_messages_name_parameters_and_the_command_line_prints_flags(tmp_path, capsys):
    """The same mistake made from Python and on the command line: Python reads the parameter it passes, in
    backquotes and with no flag; the command line reads the flag."""
    from pdeconv import analysis, demos, discover
    from pdeconv.experiment.compare import check_seed_options

    afile = tmp_path / "afile.txt"
    afile.write_text("mine")
    np.savez(tmp_path / "d.npz", u=np.random.default_rng(0).standard_normal((6, 8)), dt=0.1, dx=0.5, axes="tx")
    cases = [  # (Python call, what it says; command line, what it prints)
        (lambda: check_seed_options([0, 1], 0.1, 1), "`max_seeds` must be at least 2",
         ["compare", "--seeds", "auto", "--target-ci", "0.1", "--max-seeds", "1"], "--max-seeds must be at least 2"),
        (lambda: demos.run("heat", out=afile), f"`out` {afile} is a file; `out` must be",
         ["demo", "heat", "--out", str(afile)], f"--out {afile} is a file; --out must be a directory"),
        (lambda: analysis.load_model("pde_resnet20", in_chans=0), "`in_chans` must be at least 1",
         ["analyze", "pde_resnet20", "--in-chans", "0"], "--in-chans must be at least 1"),
        (lambda: discover.load(tmp_path / "d.npz", variables={"u": "u"}), "`variables` and `complex_part` are for",
         ["discover", "fit", str(tmp_path / "d.npz"), "--var", "u=u", "--out", str(tmp_path / "o")],
         "--var and --real or --abs are for"),
        (lambda: discover.load(tmp_path / "d.npz", axes="xt"), "`axes` xt would contradict it: drop `axes`",
         ["discover", "fit", str(tmp_path / "d.npz"), "--axes", "xt", "--out", str(tmp_path / "o")],
         "--axes xt would contradict it: drop --axes"),
    ]
    for call, says, argv, prints in cases:
        message = _raised(call)
        assert says in message and not re.search(r"--[a-z]", message), message
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert prints in err and err.count("\n") == 1, (argv, err)
    assert afile.read_text() == "mine" and not (tmp_path / "o").exists()


def test_a_library_warning_names_the_parameter_and_the_command_line_the_flag(monkeypatch):
    from pdeconv.data import subset_indices

    with pytest.warns(UserWarning, match="^`train_subset` 8 is more than the 5 training images"):
        subset_indices(5, 8)
    monkeypatch.setattr(run, "train", lambda config, **kw: (subset_indices(5, 8), {})[1])
    with pytest.warns(UserWarning, match="^--train-subset 8 is more than the 5 training images"):
        assert main(["train", "--epochs", "1", "--out", "never"]) == 0
