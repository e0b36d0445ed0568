"""Errors a user can tell from bugs: a user's mistake is one line and exit status 2; a bug shows its traceback."""

from __future__ import annotations

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
    assert err.count("\n") == 1 and err.startswith("pdeconv train: error: epochs (--epochs) must be at least 1")
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
