"""PDE-ResNets: the essay's block reproduced (its state dict exactly, its outputs to float32 rounding), the variant
registry, both families, timm."""

from __future__ import annotations

import copy
import re
from dataclasses import replace

import pytest
import torch
import torchvision
from fixtures.essay_bottleneck import Bottleneck as EssayBottleneck
from torch import nn
from torchvision.models.resnet import ResNet

import pdeconv.models as M
from pdeconv.layers import DifferentialConv2d, QuasiLinear, VariableCoefficients
from pdeconv.models.small import PadShortcut

# ----------------------------------------------------------------------------------- the essay's block


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _randomise_batchnorm(model: nn.Module, seed: int) -> None:
    # eval-mode BatchNorm with non-trivial statistics, so every layer of the block matters
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
            m.running_var.copy_(0.5 + torch.rand(c, generator=g))
            m.weight.data.copy_(1 + 0.2 * torch.randn(c, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(c, generator=g))


@pytest.fixture(scope="module")
def essay_and_seed():
    torch.manual_seed(0)
    essay = ResNet(EssayBottleneck, [3, 4, 6, 3])
    _randomise_batchnorm(essay, seed=1)
    ours = M.pde_resnet50(variant="seed", num_classes=1000)
    ours.load_state_dict(essay.state_dict(), strict=True)  # same keys and shapes, or this raises
    return essay.eval(), ours.eval()


# The essay caches its grid per block keyed on the height only: these inputs give every block a new height.
@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (1, 3, 96, 64), (2, 3, 48, 80)])
def test_seed_resnet50_is_the_essays_model(essay_and_seed, shape):
    essay, ours = essay_and_seed
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, got = essay(x), ours(x)
    assert expected.shape == (shape[0], 1000)
    # not bit for bit: ours runs the depthwise conv on channels-last input (another kernel, another order of
    # each 9-term sum) and its field product through its own autograd function; float32 rounding (~6e-8 per
    # operation) over ~50 layers stays near 1e-6 on logits of order 1, so 1e-5 catches any real difference
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_seed_state_dict_keys_match_the_essay_for_resnet101():
    essay = ResNet(EssayBottleneck, [3, 4, 23, 3])
    ours = M.pde_resnet101(variant="seed")
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in essay.state_dict().items()}
    block = ours.layer3[5]
    assert [name for name, _ in block.named_children()] == [
        "conv1", "bn1", "conv2", "bn2", "mix", "conv3", "bn3", "relu"
    ]


def test_seed_initialisation_follows_torchvision_for_the_essays_convs():
    # the essay's conv2 and mix are nn.Conv2d, so torchvision gives them Kaiming-normal (fan-out) init
    torch.manual_seed(0)
    block = M.pde_resnet50(variant="seed").layer4[1]
    for weight in (block.mix.weight, block.conv2.weight):
        fan_out = weight.shape[0] * weight[0, 0].numel()
        std = weight.std().item()
        assert abs(std / (2 / fan_out) ** 0.5 - 1) < 0.05


# ----------------------------------------------------------------------------------- variants


def test_variants_are_listed_with_descriptions():
    listed = M.variants()
    for name in ("baseline", "neumann", "dw4", "varcoef", "seed", "hyperbolic", "quasilinear"):
        assert isinstance(listed[name], str) and listed[name]
    assert set(listed) == set(M.VARIANTS)


def test_variant_specs_merge_and_conflict():
    v = M.get_variant("seed+neumann")
    assert (v.bc, v.dw, v.varcoef, v.seed_compatible) == ("neumann", 4, 2, True)
    assert M.get_variant("seed+varcoef+dw4").varcoef == 2  # equal values are no conflict
    with pytest.raises(ValueError, match=r"conflict: bc='neumann' vs bc='periodic'"):
        M.get_variant("neumann+periodic")
    with pytest.raises(ValueError, match=r"unknown variant 'sead'.*valid ones: baseline, neumann"):
        M.get_variant("seed+sead")
    with pytest.raises(ValueError, match="unknown boundary condition"):
        M.VariantOptions(bc="robin")
    with pytest.raises(ValueError, match="set dw too"):
        M.VariantOptions(quasilinear=True)


def test_hyperbolic_is_the_baseline_architecture_with_a_penalty_weight():
    base, hyper = M.pde_resnet20(), M.pde_resnet20(variant="hyperbolic")
    assert {k: v.shape for k, v in hyper.state_dict().items()} == {k: v.shape for k, v in base.state_dict().items()}
    # the penalty is how it trains, not what it is: not an architecture option, but the variant's training default
    assert M.get_variant("hyperbolic+baseline") == M.VariantOptions(name="hyperbolic+baseline")
    from pdeconv.models.variants import PARAMETERS

    assert PARAMETERS == {"bc": str, "dw": int, "order": int, "varcoef": int, "penalty": float, "lr": float}
    assert M.variant_penalty_weight("hyperbolic") == 0.1 and M.variant_penalty_weight("baseline") == 0.0
    assert M.variant_penalty_weight("seed+hyperbolic") == 0.1 and M.variant_penalty_weight("dw4") == 0.0


def test_bc_reaches_every_padded_convolution():
    model = M.pde_resnet20(variant="seed+neumann")
    padded = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.padding != (0, 0)]
    assert padded and all(m.padding_mode == "reflect" for m in padded)
    assert all(m.bc == "neumann" for m in model.modules() if isinstance(m, DifferentialConv2d))
    override = M.pde_resnet18(variant="seed+neumann", bc="periodic")
    assert override.variant.bc == "periodic" and override.variant.name == "seed+neumann[bc=periodic]"
    padded = [m for m in override.modules() if isinstance(m, nn.Conv2d) and m.padding != (0, 0)]
    assert padded and all(m.padding_mode == "circular" for m in padded)
    assert all(m.bc == "periodic" for m in override.modules() if isinstance(m, DifferentialConv2d))


def test_variants_change_the_blocks_as_documented():
    basic = M.pde_resnet20(variant="dw4").layer2[0]
    assert isinstance(basic.conv1, DifferentialConv2d) and basic.conv1.stride == 2
    assert basic.conv1.pointwise.out_channels == 32  # depthwise ×4, then the 1×1 back to planes
    bottleneck = M.pde_resnet50(variant="dw4").layer2[0]
    assert bottleneck.conv2.pointwise is None and bottleneck.conv3.in_channels == 4 * 128
    assert isinstance(M.pde_resnet20(variant="quasilinear").layer1[0].conv2, QuasiLinear)
    assert M.pde_resnet20(variant="order2").layer1[0].conv1.order == 2
    fields = M.pde_resnet20(variant="varcoef").layer3[0]
    assert isinstance(fields.mix1, VariableCoefficients) and isinstance(fields.mix2, VariableCoefficients)
    assert torch.equal(fields.mix1.field(5, 8), torch.ones(1, 64, 5, 8))  # starts as the identity


# ----------------------------------------------------------------------------------- the registry sweep

def _forward_backward(model: nn.Module, size: tuple[int, ...], num_classes: int) -> None:
    out = model(torch.randn(size))
    assert out.shape == (size[0], num_classes)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.zero_grad()


def _size_for(variant: str) -> tuple[int, ...]:
    # the ImageNet stem and stages downsample by 32; reflect padding (neumann) needs ≥ 2 pixels in layer4
    return (2, 3, 64, 64) if M.get_variant(variant).bc == "neumann" else (2, 3, 32, 48)


@pytest.mark.parametrize("variant", list(M.VARIANTS))
def test_every_variant_on_basic_blocks(variant):
    torch.manual_seed(0)
    for size in [(2, 1, 28, 28), (2, 3, 24, 40)]:
        _forward_backward(M.pde_resnet20(variant=variant, in_chans=size[1]), size, 10)


@pytest.mark.parametrize("variant", list(M.VARIANTS))
def test_every_variant_on_bottlenecks(variant):
    # the pde_resnet50/101/152 code path (PDEResNet + Bottleneck + variant) at one block per stage
    torch.manual_seed(0)
    model = M.PDEResNet(M.Bottleneck, [1, 1, 1, 1], options=M.get_variant(variant), num_classes=7)
    _forward_backward(model, _size_for(variant), 7)


# every registered model, each with another variant combination; (N, C, H, W) with C = in_chans
REGISTRY_SWEEP = {
    "pde_resnet18": ("varcoef+neumann", (2, 3, 64, 64)),
    "pde_resnet34": ("seed+periodic", (2, 1, 32, 48)),
    "pde_resnet50": ("dw4+periodic", (2, 3, 32, 48)),
    "pde_resnet101": ("seed", (2, 3, 32, 48)),
    "pde_resnet152": ("hyperbolic", (2, 3, 32, 48)),
    "pde_resnet20": ("seed", (2, 1, 28, 28)),
    "pde_resnet32": ("order2+varcoef", (2, 3, 12, 20)),
    "pde_resnet56": ("quasilinear+neumann", (2, 1, 8, 8)),
    "pde_resnet18_small": ("seed+neumann", (2, 1, 16, 24)),
}


@pytest.mark.parametrize("name", M.list_models())
def test_every_registered_model(name):
    torch.manual_seed(0)
    variant, size = REGISTRY_SWEEP[name]
    model = M.create(name, variant=variant, num_classes=7, in_chans=size[1])
    assert model.variant == M.get_variant(variant)
    _forward_backward(model, size, 7)


def test_variants_at_init_are_the_baseline_with_their_change():
    # the same weights in the baseline and in a variant: the fields of varcoef start at a ≡ 1, so the outputs
    # are the baseline's exactly; neumann is the baseline with reflect padding in every padded conv (stem too)
    torch.manual_seed(0)
    base = M.pde_resnet20(in_chans=1).eval()
    x = torch.randn(2, 1, 12, 20)
    varcoef = M.pde_resnet20(variant="varcoef", in_chans=1).eval()
    missing, unexpected = varcoef.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(".mix" in k for k in missing) and len(missing) == 18
    neumann = M.pde_resnet20(variant="neumann", in_chans=1).eval()
    neumann.load_state_dict(base.state_dict(), strict=True)
    reflected = copy.deepcopy(base)
    for m in reflected.modules():
        if isinstance(m, nn.Conv2d) and m.padding != (0, 0):
            m.padding_mode = "reflect"
    with torch.no_grad():
        assert torch.equal(varcoef(x), base(x))  # exact: the same convolutions, times 1
        # exact: the same pad and conv calls (the reflect guard only checks sizes)
        assert torch.equal(neumann(x), reflected(x)) and not torch.allclose(neumann(x), base(x))


@pytest.mark.parametrize(("name", "params"), [("pde_resnet101", 44_549_160), ("pde_resnet152", 60_192_808)])
def test_deep_models_build_with_torchvisions_parameter_count(name, params):
    # torchvision's resnet101/152 counts; the forward path is the one pde_resnet50 tests above
    assert _params(M.create(name)) == params


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown model 'pde_resnet51'; valid ones: pde_resnet18, .*pde_resnet56"):
        M.create("pde_resnet51")
    assert set(M.list_models()) == set(M.MODELS) >= {"pde_resnet50", "pde_resnet20", "pde_resnet18_small"}


def test_builders_are_keyword_only():
    with pytest.raises(TypeError):
        M.pde_resnet50("seed")


# ----------------------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize(("ours", "theirs"), [("pde_resnet18", "resnet18"), ("pde_resnet50", "resnet50")])
def test_baseline_equals_torchvision(ours, theirs):
    model, reference = M.create(ours), getattr(torchvision.models, theirs)(weights=None)
    assert _params(model) == _params(reference) == {"resnet18": 11_689_512, "resnet50": 25_557_032}[theirs]
    model.load_state_dict(reference.state_dict(), strict=True)  # torchvision's names throughout


def test_cifar_resnets_have_he_et_als_parameter_counts():
    # He et al. (2016), Table 6: ResNet-20 0.27 M, ResNet-32 0.46 M, ResNet-56 0.85 M (option A shortcuts)
    assert _params(M.pde_resnet20()) == 269_722
    assert _params(M.pde_resnet20(shortcut="B")) == 269_722 + (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    # by hand: stem 3·16·9 + BN 32; per block of width c two 3×3 convs 2·9c² and two BNs 4c, the first block
    # of stages 2 and 3 reading c/2 channels; fc 64·10 + 10. n blocks per stage: 6n + 2 layers
    def count(n: int, k: int = 1) -> int:
        c1, c2, c3 = 16 * k, 32 * k, 64 * k
        stage = lambda c, c_in: (9 * c_in * c + 2 * c) + (9 * c * c + 2 * c) + (n - 1) * (18 * c * c + 4 * c)  # noqa: E731
        return 3 * 9 * c1 + 2 * c1 + stage(c1, c1) + stage(c2, c1) + stage(c3, c2) + c3 * 10 + 10

    assert count(3) == 269_722 and count(5) == 464_154 and count(9) == 853_018  # 0.27 M, 0.46 M, 0.85 M
    assert _params(M.pde_resnet32()) == count(5) and _params(M.pde_resnet56()) == count(9)
    assert _params(M.pde_resnet20(widen_factor=2)) == count(3, k=2) == 1_073_962


def test_option_a_shortcut_subsamples_and_pads_with_zeros():
    x = torch.randn(2, 3, 7, 10, generator=torch.Generator().manual_seed(0))
    y = PadShortcut(3, 5, 2)(x)
    assert y.shape == (2, 5, 4, 5)
    assert torch.equal(y[:, :3], x[:, :, ::2, ::2]) and not y[:, 3:].any()


def test_zero_init_residual_zeroes_the_last_norm_of_every_block():
    model = M.pde_resnet18(variant="dw4", zero_init_residual=True)
    assert all(not b.bn2.weight.any() for layer in (model.layer1, model.layer4) for b in layer)


# ----------------------------------------------------------------------------------- torchvision weights


def test_torchvision_weights_load_into_a_variant_and_varcoef_starts_as_the_identity():
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None)
    _randomise_batchnorm(reference, seed=3)
    model = M.pde_resnet18(variant="varcoef")
    report = M.load_torchvision_weights(model, reference.state_dict())
    assert not report.unused and not report.reshaped
    assert report.new == [k for k in model.state_dict() if ".mix1." in k or ".mix2." in k] and len(report.new) == 16
    reference.eval(), model.eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)


def test_load_report_names_reshaped_and_new_tensors():
    reference = torchvision.models.resnet18(weights=None, num_classes=10)
    model = M.pde_resnet18(variant="dw4", num_classes=10)
    report = M.load_torchvision_weights(model, reference.state_dict())
    assert "layer1.0.conv1.weight" in report.reshaped and "layer1.0.conv1.weight" in report.new
    assert "layer1.0.conv1.pointwise.weight" in report.new
    assert "layer1.0.bn1.weight" in report.loaded and "fc.weight" in report.loaded
    assert torch.equal(model.fc.weight, reference.fc.weight)
    assert "new" in str(report)


# ----------------------------------------------------------------------------------- timm interface


@pytest.mark.parametrize(("name", "size"), [("pde_resnet20", (2, 3, 12, 20)), ("pde_resnet18", (2, 3, 32, 48))])
def test_timm_classifier_interface(name, size):
    torch.manual_seed(0)
    model = M.create(name, variant="seed", num_classes=5).eval()
    x = torch.randn(size)
    features = model.forward_features(x)
    assert features.shape[:2] == (2, model.num_features) and features.dim() == 4
    torch.testing.assert_close(model(x), model.forward_head(features))
    assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
    assert model.get_classifier() is model.fc
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.num_classes == 3
    model.reset_classifier(0)
    torch.testing.assert_close(model(x), features.mean((2, 3)))
    model.reset_classifier(0, global_pool="")
    assert model(x).shape == features.shape
    with pytest.raises(ValueError, match="needs num_classes=0"):
        model.reset_classifier(4)


def test_timm_create_model():
    timm = pytest.importorskip("timm")
    assert all(timm.is_model(name) for name in M.list_models())
    model = timm.create_model("pde_resnet50", variant="seed", num_classes=10)
    assert isinstance(model, M.PDEResNet) and model.variant.name == "seed" and model.num_classes == 10
    small = timm.create_model("pde_resnet20", variant="neumann", in_chans=1)
    assert small(torch.randn(1, 1, 28, 28)).shape == (1, 10)
    assert M.register_timm() == []  # already registered: nothing is registered twice
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("pde_resnet20", pretrained=True)


def test_variant_parts_may_set_one_option_to_a_value():
    assert M.get_variant("dw=2").dw == 2 and M.get_variant("dw=9+order=2") == M.VariantOptions(
        dw=9, order=2, name="dw=9+order=2")
    assert M.get_variant("bc=replicate+seed") == replace(M.get_variant("seed"), bc="replicate",
                                                         name="bc=replicate+seed")
    assert M.variant_penalty_weight("penalty=10") == 10.0 and M.get_variant("penalty=10") == M.VariantOptions(
        name="penalty=10")  # the penalty is training, not architecture
    assert M.variant_penalty_weight("penalty=0.1") == M.variant_penalty_weight("hyperbolic")
    # a learning rate of its own is training too: the architecture is the variant's, the runs take the rate
    assert M.get_variant("seed+lr=0.4") == replace(M.get_variant("seed"), name="seed+lr=0.4")
    assert M.variant_training("seed+lr=0.4") == {"lr": 0.4}
    assert M.variant_training("hyperbolic+lr=0.1") == {"penalty_weight": 0.1, "lr": 0.1}
    assert M.variant_training("baseline") == {} and M.variant_training(M.VariantOptions()) == {}
    dw1 = M.pde_resnet20(variant="dw=1")
    assert dw1.layer1[0].conv1.weight.shape == (16, 1, 3, 3)  # one operator per channel, then the 1×1
    for spec, message in [("dw4+dw=2", "conflict: dw=4 vs dw=2"), ("dw=x", "takes an integer"),
                          ("size=3", "unknown variant option 'size'"), ("penalty=-1", "must be ≥ 0"),
                          ("bc=robin", "unknown boundary condition"), ("order=2", "set dw too"),
                          ("hyperbolic+penalty=1", "sets penalty_weight twice: 0.1 ('hyperbolic') and 1"),
                          ("lr=0", "lr must be > 0"), ("seed+lr=0.1+lr=0.4", "sets lr twice")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            M.get_variant(spec)
            M.variant_training(spec)


def test_wave_variant_is_two_leapfrog_steps_per_block_with_the_baselines_parameter_count():
    from pdeconv.layers import Leapfrog, SymmetricConv
    from pdeconv.layers.steppers import conv_adjoint

    torch.manual_seed(0)
    base, wave = M.pde_resnet20(in_chans=1), M.pde_resnet20(variant="wave", in_chans=1)
    assert sum(p.numel() for p in wave.parameters()) == sum(p.numel() for p in base.parameters())
    block = wave.layer1[1]
    assert isinstance(block.step, Leapfrog) and [type(f) for f in block.step.fs] == [SymmetricConv] * 2
    assert isinstance(wave.layer2[0], M.BasicBlock) and wave.layer2[0].conv1.stride == (2, 2)  # downsampling stays
    # the block is u ↦ u + 2·f0(u) + f1(u + f0(u)) (leapfrog from rest, h = 1), f_k(u) = −K_kᵀ relu(BN_k(K_k u))
    block.eval()
    u = torch.randn(2, 16, 9, 7)

    def f(k, v):
        s = block.step.fs[k]
        return -conv_adjoint(s.activation(s.conv(v)), s.conv.weight, "dirichlet")

    with torch.no_grad():
        u1 = u + f(0, u)
        torch.testing.assert_close(block(u), 2 * u1 - u + f(1, u1), rtol=1e-5, atol=1e-5)
    for spec, message in [("wave+dw4", "combine with no dw"), ("wave+neumann", "use dirichlet or periodic")]:
        with pytest.raises(ValueError, match=message):
            M.get_variant(spec)
    x = torch.randn(8, 1, 28, 28)
    loss = nn.functional.cross_entropy(wave(x), torch.arange(8) % 10)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in wave.parameters())


def test_without_timm_nothing_of_it_is_imported():
    import subprocess
    import sys

    code = ("import sys; sys.modules['timm'] = None\n"  # import timm now raises ImportError
            "import pdeconv.models as M, pdeconv.run\n"
            "m = M.create('pde_resnet20', variant='seed')\n"
            "assert 'pdeconv.models.timm_models' not in sys.modules and m.forward_intermediates is not None\n"
            "print(len(M.list_models()))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(len(M.list_models()))



@pytest.mark.parametrize("name", M.list_models())
def test_every_model_and_variant_builds_with_zero_init_residual_and_starts_each_block_as_the_identity(name):
    """The sweep: every registered model × variant × zero_init_residual builds (a leapfrog stage once crashed here:
    'BasicBlock' object has no attribute 'bn2'), and with zero_init_residual every residual branch starts at 0:
    each block that keeps its input's shape maps a non-negative input (what a ReLU passes on) to itself."""
    from pdeconv.models.blocks import BasicBlock, Bottleneck, LeapfrogBlock

    large = name in ("pde_resnet50", "pde_resnet101", "pde_resnet152")  # built without storage: seconds, not a minute
    for variant in M.variants():
        for zero in (False, True):
            torch.manual_seed(0)
            with torch.device("meta" if large else "cpu"):
                model = M.create(name, variant=variant, num_classes=3, in_chans=1, zero_init_residual=zero).eval()
        blocks = [m for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck, LeapfrogBlock))]
        assert blocks, (name, variant)
        if variant == "wave" and name in ("pde_resnet20", "pde_resnet18"):
            assert any(isinstance(b, LeapfrogBlock) for b in blocks)
        for block in [] if large else blocks[:3]:  # the first stage's: every kind of block, a few ms each
            if isinstance(block, LeapfrogBlock):
                channels = block.step.fs[0].conv.in_channels
            elif block.downsample is None:  # the output's channels are the input's
                channels = (block.bn3 if isinstance(block, Bottleneck) else block.bn2).num_features
            else:
                continue
            u = torch.rand(1, channels, 6, 5)
            with torch.no_grad():
                torch.testing.assert_close(block(u), u, rtol=1e-6, atol=1e-6, msg=f"{name} {variant}")
