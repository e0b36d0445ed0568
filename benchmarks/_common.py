"""What every benchmark script shares: options, interleaved timing, memory, provenance and the JSON-lines log.

Timing: the candidates of one comparison run in rounds, each candidate once per round (A B C, B C A, C A B, ...:
the order rotates), and every ratio is the median over rounds of ``time(candidate) / time(reference)`` within a
round, so a load that changes over the run (a shared machine) touches both sides of a ratio alike. Each result
set is one line appended to ``benchmarks/results/NAME.jsonl`` with the machine, torch version, UTC date, load,
code revision and the exact command, so a number in BENCHMARKS.md can be traced to the run that printed it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pdeconv import autotune
from pdeconv.runtime import cpu_description

autotune.enable()  # benchmarks measure what training runs: the layer paths measured on this machine

RESULTS = Path(__file__).resolve().parent / "results"


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless its help already says it in words."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes."""
    p = argparse.ArgumentParser(description=description, formatter_class=_DefaultsFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one repetition: checks the script runs")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda or cuda:N")
    p.add_argument(
        "--threads", type=int, default=None, help="CPU intra-op threads (default: torch's, i.e. one per core)"
    )
    p.add_argument("--results", type=Path, default=None,
                   help="JSON-lines file to append to (default: benchmarks/results/<script>.jsonl)")
    return p


def setup(args: argparse.Namespace) -> torch.device:
    """Apply ``--threads`` and resolve ``--device``; ``ValueError`` for a CUDA device that is not there."""
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    name = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    name = "cpu" if name == "auto" else name
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {args.device} asked for, but no CUDA GPU is available; use --device cpu")
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    return device


def machine(device: torch.device) -> dict[str, Any]:
    """Where the numbers come from: platform, CPU count and threads, GPU, torch version, load average."""
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu": cpu_description(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device.type,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
    if hasattr(os, "getloadavg"):
        info["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    return info


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    candidates: dict[str, Callable[[], Any]], *, repeats: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call of each candidate: ``warmup`` untimed rounds, then ``repeats`` timed ones. Each round
    runs every candidate once, starting one candidate later than the round before (A B C, B C A, C A B, ...),
    so no candidate always follows the same neighbour (whose freed memory or cache state it would inherit)."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    order = list(candidates.items())
    for round_ in range(warmup + repeats):
        first = round_ % len(order)
        for name, fn in order[first:] + order[:first]:
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def ratio(times: dict[str, list[float]], name: str, reference: str) -> float:
    """Median over rounds of ``time(name) / time(reference)`` in the same round."""
    return statistics.median(a / b for a, b in zip(times[name], times[reference]))


def median_ms(values: Sequence[float]) -> float:
    return 1e3 * statistics.median(values)


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """``fp32``: nothing; ``bf16``: ``torch.autocast`` to bfloat16 on the device."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise ValueError(f"unknown precision {precision!r}; choose fp32 or bf16")


def peak_bytes(step: Callable[[], Any], device: torch.device) -> int | None:
    """Peak GPU memory allocated during ``step()`` above what was allocated before it; ``None`` on CPU."""
    if device.type != "cuda":
        return None
    synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def to_format(module: nn.Module, x: Tensor, channels_last: bool) -> tuple[nn.Module, Tensor]:
    """Module and input in channels_last (NHWC in memory) or left in NCHW."""
    if not channels_last:
        return module, x.contiguous()
    return module.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)


@contextlib.contextmanager
def plain_layers():
    """pdeconv's layers without their fast paths: every layer on its reference path (``pdeconv.autotune``
    mode ``reference``: the depthwise conv as one ``F.conv2d`` on the input's memory format, then the 1×1) and the
    fields' product with autograd's own backward."""
    from pdeconv import autotune
    from pdeconv.layers import varcoef

    class Product:  # the product and its field as plain autograd ops
        @staticmethod
        def apply(u, weight, grid):
            return u * varcoef._field(weight, grid, autotune.is_channels_last(u))

    saved = varcoef._Modulate
    varcoef._Modulate = Product
    try:
        with autotune.using("reference"):
            yield
    finally:
        varcoef._Modulate = saved


PLAIN = "[plain]"


def maybe_plain(fn: Callable[[], Any], label: str) -> Callable[[], Any]:
    """``fn`` run inside :func:`plain_layers` when ``label`` ends in ``[plain]``, else ``fn`` itself."""
    if not label.endswith(PLAIN):
        return fn

    def plain() -> Any:
        with plain_layers():
            return fn()

    return plain


def code_version() -> str | None:
    """``git describe --always --dirty`` of the checkout the scripts run from, if it is a git checkout."""
    from pdeconv.runtime import code_revision

    return code_revision(RESULTS.parent)


def command() -> str:
    """The command line that ran this script, as a shell would read it."""
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


def record(name: str, args: argparse.Namespace, device: torch.device, settings: dict, results: list[dict]) -> Path:
    """Append one JSON line (provenance, settings, results) to ``--results`` or ``results/NAME.jsonl``."""
    path = args.results or RESULTS / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {
        "benchmark": name,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command(),
        "code": code_version(),
        "device": device.type,
        "machine": machine(device),
        "settings": settings,
        "results": results,
    }
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")
    return path


def run(main: Callable[[], None]) -> None:
    """Run a script's ``main``; a user error (ValueError, FileNotFoundError) is one line on stderr, exit 2."""
    try:
        main()
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A Markdown table: ``columns`` are (key, header, format spec); a missing or None value prints as –."""

    def cell(row: dict, key: str, spec: str) -> str:
        value = row.get(key)
        return "–" if value is None else format(value, spec)

    lines = [
        "| " + " | ".join(h for _, h, _ in columns) + " |",
        "|" + "|".join(":--" if spec == "" else "--:" for _, _, spec in columns) + "|",
    ]
    lines += ["| " + " | ".join(cell(r, k, s) for k, _, s in columns) + " |" for r in rows]
    return "\n".join(lines)
