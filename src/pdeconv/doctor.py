"""``pdeconv doctor``: check in one command that this machine runs pdeconv's paths, one verdict per line.

Checks, on the GPU when one is visible (and on the CPU):

* every registered variant of ``pde_resnet20`` trains one step (forward, backward) in float32, in bf16 and fp16
  autocast (fp16 on GPUs; bf16 where native, or emulated with a note) and in channels-last memory: finite
  outputs and gradients, and the low-precision loss within a few roundings of the float32 loss;
* ``torch.compile`` of one variant (with ``--compile``): the compiled step's loss equals the eager one's up to
  rounding;
* with ≥ 2 GPUs, a 2-process ``pdeconv compare`` under ``torchrun`` with NCCL on generated data.

Each line reads ``PASS``, ``FAIL`` or ``SKIP``, the check, and what was measured. The exit code is 1 if any
check failed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["Check", "run_checks"]


@dataclass
class Check:
    """One verdict: ``status`` PASS, FAIL or SKIP, the check's name, and what was seen."""

    status: str
    name: str
    detail: str

    def __str__(self) -> str:
        return f"{self.status:4s}  {self.name}: {self.detail}"


def _step_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype | None) -> float:
    model.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not torch.isfinite(loss) or not all(torch.isfinite(g).all() for g in grads):
        raise FloatingPointError("non-finite loss or gradient")
    return float(loss.detach())


def _variant_checks(device: torch.device, variants: list[str]) -> list[Check]:
    from pdeconv.engine import resolve_amp
    from pdeconv.models import pde_resnet20

    precisions: list[tuple[str, torch.dtype]] = [("bf16", torch.bfloat16)]
    if device.type == "cuda":
        precisions.append(("fp16", torch.float16))
    native_bf16 = resolve_amp("auto", device) == "bf16"
    checks = []
    for variant in variants:
        for channels_last in (False, True):
            name = f"{device.type} {variant}{' channels-last' if channels_last else ''}"
            torch.manual_seed(0)
            try:
                model = pde_resnet20(variant=variant, in_chans=1).to(device)
                x = torch.randn(8, 1, 28, 28, device=device)
                if channels_last:
                    model, x = model.to(memory_format=torch.channels_last), x.contiguous(
                        memory_format=torch.channels_last)
                y = torch.randint(0, 10, (8,), device=device)
                reference = _step_loss(model, x, y, None)
                parts = [f"fp32 loss {reference:.4f}"]
                for label, dtype in precisions:
                    low = _step_loss(model, x, y, dtype)
                    # a few roundings of the low-precision dtype on a loss of order 1 (2^-8 for bf16, 2^-10 fp16)
                    if abs(low - reference) > 8 * torch.finfo(dtype).eps * max(1.0, abs(reference)):
                        raise AssertionError(f"{label} loss {low:.4f} is not the float32 loss {reference:.4f}")
                    parts.append(f"{label} {low:.4f}" + ("" if label != "bf16" or native_bf16 else " (emulated)"))
                checks.append(Check("PASS", name, ", ".join(parts)))
            except Exception as e:  # noqa: BLE001  (every failure is a verdict, the others still run)
                checks.append(Check("FAIL", name, f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"))
    return checks


def _compile_check(device: torch.device) -> Check:
    from pdeconv.models import pde_resnet20

    torch.manual_seed(0)
    try:
        model = pde_resnet20(variant="seed", in_chans=1).to(device)
        x, y = torch.randn(8, 1, 28, 28, device=device), torch.randint(0, 10, (8,), device=device)
        eager = _step_loss(model, x, y, None)
        start = time.perf_counter()
        compiled = _step_loss(torch.compile(model), x, y, None)
        if abs(compiled - eager) > 1e-4 * max(1.0, abs(eager)):  # another kernel order: float32 rounding only
            raise AssertionError(f"compiled loss {compiled:.6f} is not the eager loss {eager:.6f}")
        return Check("PASS", f"{device.type} torch.compile seed", f"loss {compiled:.4f} = eager "
                                                                   f"(compiled in {time.perf_counter() - start:.0f} s)")
    except Exception as e:  # noqa: BLE001
        return Check("FAIL", f"{device.type} torch.compile seed", f"{type(e).__name__}: {str(e).splitlines()[0]}")


def _nccl_check() -> Check:
    name = "torchrun 2 processes NCCL compare"
    if torch.cuda.device_count() < 2:
        return Check("SKIP", name, f"needs 2 GPUs, {torch.cuda.device_count()} visible")
    from pdeconv.data import write_synthetic_fashion_mnist

    with tempfile.TemporaryDirectory() as tmp:
        data = write_synthetic_fashion_mnist(Path(tmp) / "data", 256, 64)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "pdeconv",
               "compare", "--variants", "baseline,seed", "--seeds", "1", "--epochs", "1", "--batch-size", "32",
               "--data-dir", str(data), "--out", str(Path(tmp) / "exp"), "--no-progress", "--amp", "bf16",
               "--channels-last"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ))
        rows = (Path(tmp) / "exp" / "results.csv").read_text().splitlines() if done.returncode == 0 else []
    if done.returncode != 0 or len(rows) != 3:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return Check("FAIL", name, f"exit {done.returncode}: {tail}")
    return Check("PASS", name, "2 runs, one results.csv")


def run_checks(*, variants: list[str] | None = None, compile: bool = False, cpu: bool = True,
               report: Callable[[Check], None] = print) -> list[Check]:
    """Run the checks (see the module docstring), report each as it finishes, return them all."""
    from pdeconv.models import VARIANTS
    from pdeconv.runtime import cpu_description

    variants = variants or list(VARIANTS)
    checks: list[Check] = []

    def add(check: Check) -> None:
        checks.append(check)
        report(check)

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(gpus)) if gpus else "none"
    add(Check("PASS", "environment", f"torch {torch.__version__}; CPU {cpu_description()}; GPUs: {names}"))
    devices = ([torch.device("cuda", 0)] if gpus else []) + ([torch.device("cpu")] if cpu or not gpus else [])
    if not gpus:
        add(Check("SKIP", "GPU checks", "no CUDA GPU visible"))
    for device in devices:
        for check in _variant_checks(device, variants):
            add(check)
        if compile:
            add(_compile_check(device))
    add(_nccl_check() if gpus else Check("SKIP", "torchrun 2 processes NCCL compare", "no CUDA GPU visible"))
    return checks
