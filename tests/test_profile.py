"""profile(): parameters, forward FLOPs (2 per multiply-add) and activation memory, checked by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pdeconv.models import Profile, pde_resnet20, profile, saved_activation_bytes


@pytest.mark.parametrize("groups", [1, 4, 8])
def test_conv_flops_follow_the_analytic_count(groups):
    # 2 · C_in · C_out · k² · H_out · W_out / groups per sample, here on a non-square input
    conv = nn.Conv2d(8, 16, 3, padding=1, groups=groups)
    p = profile(conv, (2, 8, 12, 20))
    assert p.flops == 2 * 2 * 8 * 16 * 9 * 12 * 20 // groups
    assert p.params == 16 * 8 // groups * 9 + 16


def test_strided_conv_counts_output_pixels():
    p = profile(nn.Conv2d(3, 4, 5, stride=2, padding=2, bias=False), (1, 3, 9, 16))
    assert p.flops == 2 * 3 * 4 * 25 * 5 * 8


def test_resnet20_flops_match_he_et_al():
    # conv + fc multiply-adds of ResNet-20 on 32×32, counted by hand: stem 3·16·9·32², stage 1 six
    # 16·16·9·32², stage 2 16·32·9·16² + five 32·32·9·16², stage 3 32·64·9·8² + five 64·64·9·8², fc 64·10:
    # 40,551,040 (≈ 41 M, He et al.'s figure), 2 FLOPs each
    p = profile(pde_resnet20(), (3, 32, 32))
    assert p.input_size == (1, 3, 32, 32)
    assert p.flops == 2 * 40_551_040 and p.params == 269_722


def test_activation_memory_counts_tensors_saved_for_backward():
    # the conv saves its input (for the weight gradient), ReLU its output; parameters are not activations
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU())
    p = profile(model, (2, 3, 6, 10))
    assert p.activation_bytes == 4 * (2 * 3 * 6 * 10 + 2 * 8 * 6 * 10)
    p64 = profile(model.double(), (2, 3, 6, 10))
    assert p64.activation_bytes == 2 * p.activation_bytes


def test_profile_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    profile(model, (4, 1, 8, 8))
    assert not model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_str_is_readable():
    text = str(Profile(params=269_722, flops=81_102_080, activation_bytes=3_000_000, input_size=(1, 3, 32, 32)))
    assert text == (
        "269.72 kparams · forward 81.10 MFLOPs (training step ≈ 3× = 243.31 MFLOPs) · "
        "activations 3.00 MB at input 1×3×32×32"
    )


def test_bad_input_size():
    with pytest.raises(ValueError, match=r"input_size must be \(N, C, H, W\)"):
        profile(nn.Conv2d(1, 1, 1), (1, 8))


def test_saved_activation_bytes_counts_each_storage_once_and_leaves_out_parameters():
    x = torch.randn(1000, requires_grad=True)  # 4,000 bytes of float32
    w = torch.randn(100, requires_grad=True)  # 400 bytes
    assert saved_activation_bytes(lambda: x * x) == 4000  # saved twice, one storage
    assert saved_activation_bytes(lambda: x.view(10, 100) * w) == 4400  # a view shares x's storage
    assert saved_activation_bytes(lambda: x.view(10, 100) * w, [w]) == 4000
    assert saved_activation_bytes(lambda: x + x) == 0  # addition saves nothing for its backward
