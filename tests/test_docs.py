"""The documentation does what it says: every Python snippet in README.md and docs/*.md runs, and the tables the
README states (the dictionary, the export/compile/script matrix) are what the code does."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from pdeconv import data, stencil

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "essay.md")]


def _snippets(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


# discover.md's snippets fit PDEs on real-size grids: tens of seconds, so in the slow set (make test-slow)
_SLOW_DOCS = {"discover.md"}


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.name in _SLOW_DOCS else p
                                  for p in DOCS], ids=[p.name for p in DOCS])
def test_every_python_snippet_runs(path, tmp_path, monkeypatch, capsys):
    snippets = _snippets(path)
    if not snippets:
        pytest.skip(f"{path.name} has no Python snippets")
    # in an empty folder, with a small Fashion-MNIST stand-in where pdeconv looks for the data
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PDECONV_DATA", str(data.write_synthetic_fashion_mnist(tmp_path / "fmnist", 256, 64)))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {"__name__": "__docs__"}
    for i, code in enumerate(snippets):
        try:
            exec(compile(code, f"{path.name} snippet {i + 1}", "exec"), namespace)  # noqa: S102
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"{path.name} snippet {i + 1} fails: {type(e).__name__}: {e}")
    capsys.readouterr()


def test_the_readme_dictionary_table_is_what_describe_prints():
    text = (ROOT / "README.md").read_text()
    rows = {
        "Sobel": stencil.sobel_x(), "Gaussian": stencil.gaussian(), "central difference": stencil.dx(),
        "5-point Laplacian": stencil.laplacian(),
    }
    for name, kernel in rows.items():
        line = next(line for line in text.splitlines() if line.startswith(f"| {name}"))
        shown = re.findall(r"`([^`]*)`", line.split("|")[2])[0]
        assert shown == stencil.describe(kernel), name


def _support(make, how: str, *, fullgraph: bool = True) -> bool:
    x = torch.randn(2, 4, 8, 8)
    module = make().eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if how == "export":
                torch.export.export(module, (x,)).module()(x)
            elif how == "compile":
                torch.compile(module, backend="aot_eager", fullgraph=fullgraph)(x)
            elif how == "script":
                torch.jit.script(module)(x)
            else:
                torch.jit.trace(module, (x,))(x)
        return True
    except Exception:  # noqa: BLE001  (any failure means: not supported)
        return False


@pytest.mark.slow
def test_the_readme_support_matrix_is_true():
    from pdeconv import set_boundary
    from pdeconv.layers import (
        DifferentialConv2d,
        EulerStep,
        Leapfrog,
        QuasiLinear,
        RungeKutta,
        SymmetricConv,
        SymmetricHyperbolic2d,
        VariableCoefficients,
        Verlet,
    )

    def boundary_conv():
        conv = nn.Conv2d(4, 4, 3, padding=1)
        set_boundary(conv, "neumann")
        return conv

    conv = lambda: nn.Conv2d(4, 4, 3, padding=1)  # noqa: E731
    makers = {
        "`DifferentialConv2d`, `QuasiLinear`": [lambda: DifferentialConv2d(4, 4), lambda: QuasiLinear(4)],
        "`VariableCoefficients`": [lambda: VariableCoefficients(4)],
        "`EulerStep`, `Leapfrog`": [lambda: EulerStep(conv(), 0.1, steps=2), lambda: Leapfrog(conv(), 0.1, steps=2)],
        "`RungeKutta`, `Verlet`, `SymmetricConv`": [
            lambda: RungeKutta(conv(), 0.1, steps=2),
            lambda: Verlet(nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1), 0.1, steps=2),
            lambda: SymmetricConv(4),
        ],
        "`SymmetricHyperbolic2d`": [lambda: SymmetricHyperbolic2d(4)],
        "`nn.Conv2d` after `set_boundary`": [boundary_conv],
    }
    header = "| layer | `torch.export` | `torch.compile` | `torch.jit.script` |"
    table = (ROOT / "README.md").read_text().split(header)[1]
    for row, make_all in makers.items():
        line = next(line for line in table.splitlines() if line.startswith(f"| {row} |"))
        claimed = [cell.strip().startswith("yes") for cell in line.split("|")[2:5]]
        # "yes (one graph break …)": compiles, but not as one graph — and says so
        breaks = "graph break" in line.split("|")[3]
        for make in make_all:
            actual = [_support(make, how, fullgraph=not (how == "compile" and breaks))
                      for how in ("export", "compile", "script")]
            assert actual == claimed, (row, actual)
            assert _support(make, "trace"), row  # "every layer also traces"


def test_tracing_leaves_the_module_exportable():
    from pdeconv.layers import VariableCoefficients

    m = VariableCoefficients(4, init="default")
    x = torch.randn(2, 4, 8, 8)
    traced = torch.jit.trace(m, (x,))  # its sanity check runs the module eagerly too, which may cache a grid
    torch.testing.assert_close(traced(x), m(x))
    torch.testing.assert_close(torch.export.export(m, (x,)).module()(x), m(x))  # the module is not poisoned


def test_results_tables_quote_the_page_wide_p_values_of_the_committed_summary():
    """docs/results.md's per-experiment tables give each comparison's p adjusted over the whole page (BH, Holm): they
    must be the ones `python benchmarks/answers.py --summary` last wrote to results/summary.csv."""
    import csv

    with open(ROOT / "results" / "summary.csv", newline="") as f:
        summary = {(r["experiment"], r["comparison"]): r for r in csv.DictReader(f)}

    def shown(x: str) -> str:
        return "–" if x == "" else ("< 0.001" if float(x) < 0.001 else f"{float(x):.3f}")

    sections = {"The essay's block": "seed", "Boundary conditions": "boundary", "Order-≤2 operators": "order",
                "Operators per channel": "operators", "Variable coefficients": "varcoef",
                "The hyperbolicity penalty": "hyperbolicity", "A hyperbolic network": "wave"}
    checked, experiment, columns, reference = 0, None, None, None
    for line in (ROOT / "docs" / "results.md").read_text().splitlines():
        if line.startswith("## "):
            experiment, columns = sections.get(line[3:].strip()), None
        elif experiment and line.startswith("| variant |") and "p (BH, page)" in line:
            columns = [c.strip() for c in line.strip("|").split("|")]
            reference = columns[2].removeprefix("Δ vs ")
        elif columns and line.startswith("| ") and not line.startswith("|:"):
            cells = dict(zip(columns, (c.strip() for c in line.strip("|").split("|"))))
            variant = cells["variant"].split(" (")[0]
            if variant == reference:
                continue
            row = summary[experiment, f"{variant} − {reference}"]
            assert (cells["p (BH, page)"], cells["p (Holm, page)"]) == (
                shown(row["p_document_bh"]), shown(row["p_document_holm"])), (experiment, variant)
            checked += 1
        elif not line.startswith("|"):
            columns = None
    assert checked >= 17


def test_the_training_loop_snippet_is_right_for_any_fashion_mnist_folder(tmp_path, monkeypatch, capsys):
    """docs/python.md invites pointing its loop at one's own Fashion-MNIST folder: with the real layout (torchvision's
    FashionMNIST/raw, gzipped IDX files) and a test set of another size, every printed accuracy is a share of the
    test images actually seen (it once divided by a hard-coded 128 and printed 777%)."""
    snippet = next(s for s in _snippets(ROOT / "docs" / "python.md") if "for epoch in range" in s)
    mine = data.write_synthetic_fashion_mnist(tmp_path / "mine" / "FashionMNIST" / "raw", 256, 300, gz=True)
    call = 'data.write_synthetic_fashion_mnist("runs/toy-fmnist", n_train=512, n_test=128)'
    assert call in snippet
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet.replace(call, repr(str(mine))), "python.md loop", "exec"), {"__name__": "__docs__"})  # noqa: S102
    printed = re.findall(r"test accuracy ([\d.]+)% of (\S+) images", capsys.readouterr().out)
    assert len(printed) == 2 and all(seen == "300" and 0 <= float(acc) <= 100 for acc, seen in printed)


def test_the_results_page_is_what_answers_summary_writes_from_the_committed_summary(monkeypatch):
    """Every page-wide p in docs/results.md's tables and its by-setting table are what `answers.py --summary` puts
    there from results/summary.csv: rewriting the page from the committed summary changes nothing."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("answers", ROOT / "benchmarks" / "answers.py")
    answers = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "answers", answers)  # its dataclasses look their module up there
    spec.loader.exec_module(answers)
    page = (ROOT / "docs" / "results.md").read_text()
    assert answers.BEGIN_SETTINGS in page and answers.END_SETTINGS in page
    rewritten = answers.results_page(page, answers.read_summary(ROOT / "results" / "summary.csv"))
    assert rewritten == page


def test_the_results_page_shows_the_learning_rate_choice_that_answers_lr_choice_wrote():
    """docs/results.md's learning-rate table is results/lr/choice.md's (written by `answers.py --lr-choice` from the
    committed sweep), row for row: a rate chosen again must show on the page."""
    choice = ROOT / "results" / "lr" / "choice.md"
    if not choice.is_file():
        pytest.skip("the learning-rate sweep has not chosen yet")
    rows = [line for line in choice.read_text().splitlines() if line.startswith("|")]
    page = (ROOT / "docs" / "results.md").read_text().splitlines()
    assert len(rows) == 9 and all(row in page for row in rows), [row for row in rows if row not in page]
