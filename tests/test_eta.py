"""pdeconv.eta: the remaining time of a job of runs, from the epochs measured so far (a fake clock)."""

import pytest

from pdeconv.eta import Estimate, Progress, format_duration


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def epoch(n: int, wall_s: float, img_per_s: float = 500.0) -> dict:
    train_s = 0.8 * wall_s
    return {"epoch": n, "wall_s": wall_s, "train_s": train_s, "img_per_s": img_per_s}


def test_a_job_of_equal_runs_is_predicted_from_its_first_epoch_and_ends_at_the_real_total():
    clock = Clock()
    job = Estimate(clock)
    for seed in range(3):
        job.add(("baseline", seed), "baseline", epochs=2)
    assert job.seconds_left() is None and "estimate follows" in job.line()
    # each run: 5 s of start-up, then 2 epochs of 20 s; the whole job takes 3 × 45 = 135 s
    true_left = []
    for seed in range(3):
        job.start(("baseline", seed))
        clock.now += 5
        for n in (1, 2):
            clock.now += 20
            job.epoch(("baseline", seed), epoch(n, 20))
            true_left.append(135 - clock.now)
            assert job.seconds_left() == pytest.approx(true_left[-1])
        job.finish(("baseline", seed))
    assert job.runs_left() == 0 and job.seconds_left() == 0 and job.epochs() == (6, 6)
    assert job.img_per_s() == pytest.approx(500)


def test_unmeasured_variants_take_the_mean_of_the_measured_and_each_its_own_once_measured():
    clock = Clock()
    job = Estimate(clock)
    for variant in ("baseline", "seed"):
        for s in range(2):
            job.add((variant, s), variant, epochs=2)
    job.start(("baseline", 0))
    clock.now = 10
    job.epoch(("baseline", 0), epoch(1, 10))  # no start-up: 0 s
    # 1 epoch left of this run, 2 of each of 3 others, all at 10 s
    assert job.seconds_left() == pytest.approx(70)
    assert job.line() == "4 runs, about 70 s left at 500 img/s (measured on this machine so far)"
    clock.now = 20
    job.epoch(("baseline", 0), epoch(2, 10))
    job.finish(("baseline", 0))
    job.start(("seed", 0))
    clock.now = 50
    job.epoch(("seed", 0), epoch(1, 30))  # the seed variant is 3× slower: its runs count so from now on
    assert job.seconds_left() == pytest.approx(30 + 2 * 30 + 2 * 10)
    assert job.runs_left() == 3


def test_finished_or_foreign_runs_are_not_part_of_the_job_and_a_resumed_run_counts_only_its_remaining_epochs():
    clock = Clock()
    job = Estimate(clock)
    job.add("a", "v", epochs=4, done=3)  # to resume: one epoch left
    job.add("b", "v", epochs=4)
    job.add("c", "v", epochs=4)
    job.drop("c")  # another process trains it
    job.start("a")
    clock.now = 12
    job.epoch("a", epoch(4, 10))  # 2 s of start-up
    assert job.runs_left() == 2 and job.epochs() == (4, 8)
    assert job.seconds_left() == pytest.approx(2 + 4 * 10)
    job.finish("a")
    job.start("b")
    clock.now = 13  # 1 s into b's start-up of 2 s
    assert job.seconds_left() == pytest.approx(1 + 4 * 10)
    with pytest.raises(KeyError, match="add it first"):
        job.start("c")


@pytest.mark.parametrize("seconds, text", [(0, "0 s"), (44.6, "45 s"), (89, "89 s"), (90, "2 min"),
                                           (27 * 60 + 10, "27 min"), (89 * 60, "89 min"), (125 * 60, "2 h 05 min")])
def test_durations_are_rounded_to_what_an_estimate_can_promise(seconds, text):
    assert format_duration(seconds) == text


def test_on_a_terminal_one_bar_carries_the_estimate_and_printed_lines_go_above_it(monkeypatch, capsys):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    clock = Clock()
    progress = Progress("compare", bar=True, clock=clock)
    assert progress.shown
    progress.add("a", "v", epochs=2)
    progress.add("b", "v", epochs=2)
    progress.start("a")
    with progress.printing():
        clock.now = 10
        print("epoch 1/2 ...")
        progress.epoch("a", epoch(1, 10))
    progress.close()
    drawn = screen.getvalue()
    assert "1/4 epochs [00:00, 2 runs, about 30 s left at 500 img/s]" in drawn
    printed = capsys.readouterr().out
    assert "epoch 1/2 ..." in drawn + printed and "2 runs, about 30 s left" in drawn + printed
    # not on a terminal, or not asked for: no bar at all
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not Progress("compare", bar=True).shown and not Progress("compare", bar=False).shown
