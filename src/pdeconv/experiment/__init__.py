"""Variants × seeds → runs → ``results.csv``, ``report.md`` and plots: the essay's ideas, ablated honestly.

An experiment directory holds::

    experiment.json           the shared training settings (everything but the variant and the seed)
    runs/VARIANT/seedN/       one ``pdeconv train`` run each (config.json, metrics.jsonl, checkpoint.pt, ...)
    results.csv               one row per run
    report.md                 per variant: the paired difference to the reference (mean Δ, 95% CI, paired t-test,
                              Holm-adjusted), its own mean ± std, cost; one plain sentence per comparison
    accuracy_per_epoch.png    mean and min–max band over seeds, per variant
    accuracy_vs_flops.png     mean ± std of test accuracy against forward FLOPs per image

By idea: :mod:`~pdeconv.experiment.compare` trains the runs (skipping finished ones, resuming unfinished
ones), :mod:`~pdeconv.experiment.results` collects ``results.csv``, :mod:`~pdeconv.experiment.stats` holds the
statistics, :mod:`~pdeconv.experiment.plots` the figures and :mod:`~pdeconv.experiment.report` writes
``report.md``. How one run is configured and built is :mod:`pdeconv.run`'s.
"""

from __future__ import annotations

from pdeconv.experiment.compare import CompareResult, compare
from pdeconv.experiment.report import Report, summary_table, write_report
from pdeconv.experiment.results import RESULT_COLUMNS, collect

__all__ = [
    "RESULT_COLUMNS",
    "Report",
    "CompareResult",
    "collect",
    "compare",
    "summary_table",
    "write_report",
]

