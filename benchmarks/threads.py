"""Training speed next to other busy processes: intra-op threads and OpenMP's wait policy, side by side.

PyTorch's CPU build runs its intra-op parallel regions on OpenMP (libgomp) threads, one per core by default.
When another process keeps a core busy, one of those threads is descheduled for a whole time slice at every
parallel region, and the others wait for it at the region's barrier: a train step made of hundreds of small
regions slows down many times over. This script measures the `fast` recipe's ResNet-20 train step (batch 128,
28², channels-last, bf16 autocast where the CPU computes bf16 natively, float32 elsewhere, SGD) under each
setting, with 0 and with ``--busy`` other processes spinning on the CPU (pure Python loops, as a second job
would), for the baseline and the essay's block (``seed``).

Settings (each a fresh process: the wait policy is read when libgomp loads, before ``import torch``):

* ``default``: PyTorch's default threads (one per core) and libgomp's default wait policy;
* ``passive``: the same threads with ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep instead of spinning);
* ``threads=1``: one intra-op thread;
* ``auto``: what ``pdeconv train --threads auto`` picks at start (:func:`pdeconv.runtime.auto_threads`).

Rounds rotate the order of the settings; the table gives the median step time per setting and load, and each
setting's images/s relative to ``default`` on a quiet machine.

    python benchmarks/threads.py [--variants baseline,seed] [--busy 1] [--repeats 3] [--steps 10] [--smoke]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import parser, record, run, setup, table

SETTINGS = {
    "default": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "threads=1": {"threads": "1"},
    "auto": {"threads": "auto"},
}
BUSY = [sys.executable, "-c", "while True: pass"]


def child(variant: str, steps: int, threads: str | None, batch: int) -> dict:
    """Time ``steps`` train steps in this process (after 2 warm-up steps); the median and the threads used."""
    import torch
    import torch.nn.functional as F

    from pdeconv.engine import resolve_amp
    from pdeconv.models import create
    from pdeconv.runtime import set_threads

    used = set_threads(threads)
    torch.manual_seed(0)
    model = create("pde_resnet20", variant=variant, in_chans=1, num_classes=10).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    amp = resolve_amp("auto", torch.device("cpu"))
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return {"step_s": statistics.median(times), "threads": used, "amp": amp}


def measure(variant: str, setting: str, *, steps: int, batch: int) -> dict:
    env = {**os.environ, **{k: v for k, v in SETTINGS[setting].items() if k != "threads"}}
    cmd = [sys.executable, __file__, "--child", variant, "--steps", str(steps), "--batch", str(batch)]
    if "threads" in SETTINGS[setting]:
        cmd += ["--child-threads", SETTINGS[setting]["threads"]]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{setting} {variant}: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--variants", default="baseline,seed", help="pde_resnet20 variants, comma-separated")
    p.add_argument("--busy", type=int, default=1, help="busy processes in the loaded measurements")
    p.add_argument("--repeats", type=int, default=3, help="rounds over all settings")
    p.add_argument("--steps", type=int, default=10, help="timed train steps per measurement")
    p.add_argument("--batch", type=int, default=128, help="batch size")
    p.add_argument("--child", help=argparse_hidden())
    p.add_argument("--child-threads", default=None, help=argparse_hidden())
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.child_threads, args.batch)))
        return
    device = setup(args)
    if device.type != "cpu":
        raise ValueError("this benchmark measures CPU threads; run it with --device cpu")
    if args.smoke:
        args.repeats, args.steps, args.batch, args.busy = 1, 1, 8, min(args.busy, 1)
    variants = args.variants.split(",")
    results = []
    for load in (0, args.busy):
        busy = [subprocess.Popen(BUSY) for _ in range(load)]
        try:
            times: dict[tuple[str, str], list[dict]] = {}
            names = list(SETTINGS)
            for round_ in range(args.repeats):
                first = round_ % len(names)
                for setting in names[first:] + names[:first]:
                    for variant in variants:
                        print(f"busy {load}, round {round_ + 1}: {variant} {setting}", file=sys.stderr, flush=True)
                        times.setdefault((variant, setting), []).append(
                            measure(variant, setting, steps=args.steps, batch=args.batch)
                        )
        finally:
            for proc in busy:
                proc.kill()
                proc.wait()
        for (variant, setting), runs in times.items():
            step = statistics.median(r["step_s"] for r in runs)
            results.append({"variant": variant, "setting": setting, "busy": load, "step_ms": 1e3 * step,
                            "img_per_s": args.batch / step, "threads": runs[0]["threads"], "amp": runs[0]["amp"],
                            "step_ms_runs": [1e3 * r["step_s"] for r in runs]})
    quiet = {r["variant"]: r["img_per_s"] for r in results if r["setting"] == "default" and r["busy"] == 0}
    for r in results:
        r["vs_quiet_default"] = r["img_per_s"] / quiet[r["variant"]]
    rows = sorted(results, key=lambda r: (r["variant"], r["busy"], list(SETTINGS).index(r["setting"])))
    print(table(rows, [("variant", "variant", ""), ("busy", "busy processes", "d"), ("setting", "setting", ""),
                       ("threads", "threads", "d"), ("step_ms", "step ms", ".0f"), ("img_per_s", "img/s", ".0f"),
                       ("vs_quiet_default", "× quiet default", ".2f")]))
    settings = {"variants": variants, "busy": args.busy, "repeats": args.repeats, "steps": args.steps,
                "batch": args.batch, "smoke": args.smoke, "settings": SETTINGS}
    print(f"\nappended to {record('threads', args, device, settings, rows)}")


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    run(main)
