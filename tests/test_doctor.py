"""pdeconv doctor: one verdict per check, failures reported and counted (CPU here; GPU checks skip)."""

from __future__ import annotations

import torch

from pdeconv import doctor
from pdeconv.cli import main


def test_doctor_passes_on_this_machine_and_skips_what_it_cannot_check(capsys):
    assert main(["doctor", "--variants", "baseline,dw4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("PASS  environment: torch ")
    assert sum(line.startswith("PASS  cpu ") for line in lines) == 4  # 2 variants × 2 memory formats
    assert any(line.startswith("SKIP  torchrun 2 processes NCCL compare") for line in lines)
    assert lines[-1].endswith("0 failed")


def test_a_broken_path_is_a_failed_check_and_the_others_still_run(monkeypatch):
    import pdeconv.models

    real = pdeconv.models.pde_resnet20

    def broken(*, variant="baseline", **kwargs):
        model = real(variant=variant, **kwargs)
        if variant == "dw4":  # a layer that returns NaN: what a wrong kernel would do
            model.fc.register_forward_hook(lambda m, args, out: out * torch.nan)
        return model

    monkeypatch.setattr(pdeconv.models, "pde_resnet20", broken)
    checks = doctor.run_checks(variants=["baseline", "dw4"], report=lambda check: None)
    verdicts = {c.name: c.status for c in checks}
    assert verdicts["cpu baseline"] == "PASS" and verdicts["cpu dw4"] == "FAIL"
    assert "non-finite" in next(c.detail for c in checks if c.name == "cpu dw4")
