"""The older-CPU pass of ``make test`` really runs other kernels (else it would prove nothing)."""

import os

import pytest
import torch


def test_the_requested_cpu_capability_is_in_effect():
    wanted = os.environ.get("ATEN_CPU_CAPABILITY")
    if not wanted:
        pytest.skip("checked in make test's second pass, which sets ATEN_CPU_CAPABILITY=avx2")
    assert torch.backends.cpu.get_cpu_capability().lower() == wanted.lower()
