"""convert(): the essay's boundary conditions and variable coefficients applied to existing ConvNets."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import pdeconv
from pdeconv.layers import DifferentialConv2d, monomials
from pdeconv.models import ConvertReport, ModulatedConv2d, convert, pde_resnet20


def _spatial_convs(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and max(m.kernel_size) > 1]


@pytest.mark.parametrize(
    ("build", "size"),
    [
        (lambda: torchvision.models.resnet18(weights=None), (2, 3, 48, 64)),
        (lambda: torchvision.models.mobilenet_v3_small(weights=None), (2, 3, 40, 56)),
    ],
    ids=["resnet18", "mobilenet_v3_small"],
)
def test_converted_model_equals_the_original_at_init(build, size):
    torch.manual_seed(0)
    original = build().eval()
    model = copy.deepcopy(original)
    spatial = _spatial_convs(model)
    report = convert(model, variable_coefficients=2)
    assert report.modulated == spatial and report.count == len(spatial) > 10
    x = torch.randn(size)
    with torch.no_grad():
        assert torch.equal(model(x), original(x))  # a ≡ 1 exactly
    # the original weights keep their names; the only new keys are the fields
    new = set(model.state_dict()) - set(original.state_dict())
    assert new == {f"{name}.varcoef.weight" for name in spatial}
    missing, unexpected = model.load_state_dict(original.state_dict(), strict=False)
    assert set(missing) == new and not unexpected


def test_timm_resnet_converts_too():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    original = timm.create_model("resnet18", num_classes=4).eval()
    model = copy.deepcopy(original)
    report = convert(model, variable_coefficients=1, bc="dirichlet")
    assert len(report.modulated) == 17  # stem 7×7 + 16 3×3
    assert report.boundary == [] and len(report.had_boundary) == 17  # zero padding is dirichlet already
    x = torch.randn(1, 3, 32, 40)
    with torch.no_grad():
        assert torch.equal(model(x), original(x))


def test_modulation_acts_on_the_strided_output_grid():
    # u ↦ conv(u) · a(x, y) with a evaluated on the conv's own (downsampled, non-square) output grid
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    x = torch.randn(2, 3, 10, 16)
    expected = conv(x)
    convert(conv, variable_coefficients=1)
    assert isinstance(conv, ModulatedConv2d)
    with torch.no_grad():
        conv.varcoef.weight.copy_(torch.randn(4, 3, 1, 1))  # a_c = w0 + w1·x + w2·y
    out = conv(x)
    assert out.shape == (2, 4, 5, 8)
    grid = monomials(5, 8, 1)[0]  # (3, H_out, W_out): 1, x, y on the output pixel centres
    field = torch.einsum("ck,khw->chw", conv.varcoef.weight[:, :, 0, 0], grid)
    torch.testing.assert_close(out, expected * field)


def test_conv_subclasses_keep_their_own_forward():
    class ShiftedConv(nn.Conv2d):  # stands in for timm's Conv2dSame and the like
        def forward(self, input):
            return super().forward(input) + 1.0

    torch.manual_seed(0)
    conv = ShiftedConv(2, 2, 3, padding=1)
    x = torch.randn(1, 2, 6, 9)
    expected = conv(x)
    convert(conv, variable_coefficients=2)
    assert type(conv).__name__ == "ModulatedShiftedConv" and isinstance(conv, (ShiftedConv, ModulatedConv2d))
    with torch.no_grad():
        conv.varcoef.weight[:, 0] = 2.0  # a ≡ 2 doubles the subclass's output, shift included
    torch.testing.assert_close(conv(x), 2 * expected)


def test_boundary_condition_everywhere():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    report = convert(model, bc="neumann")
    padded = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.padding != (0, 0)]
    assert report.boundary == padded and len(padded) == 17 and not report.modulated
    assert all(model.get_submodule(n).padding_mode == "reflect" for n in padded)
    x = torch.randn(2, 3, 64, 64)
    assert model(x).shape == (2, 1000)
    # the stem now reads mirror images of the border (exact: the same pad and conv calls)
    assert torch.equal(model.conv1(x), F.conv2d(F.pad(x, (3, 3, 3, 3), mode="reflect"), model.conv1.weight, stride=2))
    # pdeconv's own differential layers take the boundary condition too
    small = pde_resnet20(variant="dw4")
    report = convert(small, bc="periodic")
    layers = [n for n, m in small.named_modules() if isinstance(m, DifferentialConv2d)]
    stem = ["conv1"]  # the only padded nn.Conv2d of a dw4 ResNet-20; its 1×1 convs have no padding
    assert report.boundary == stem + layers and len(layers) == 18  # each layer once, in model order
    assert all(small.get_submodule(n).bc == "periodic" for n in layers) and small.conv1.padding_mode == "circular"
    assert str(report).splitlines()[1] == "  boundary condition 'periodic': 19 convolutions"


def test_converted_model_trains_one_step():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=5)
    convert(model, bc="neumann", variable_coefficients=2)
    fields = [m.varcoef.weight for m in model.modules() if isinstance(m, ModulatedConv2d)]
    before = [w.detach().clone() for w in fields]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    conv = model.layer1[0].conv1
    seen = {}
    conv.register_forward_hook(lambda m, args, out: seen.update(u=m._conv_forward(args[0], m.weight, m.bias)))
    conv.register_full_backward_hook(lambda m, grad_in, grad_out: seen.update(g=grad_out[0]))
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in fields)
    # at a ≡ 1 the field gradient is Σ_{n,y,x} g·conv(u)·P_k: against the monomials directly (float32 sums of
    # 4·16·16 = 1,024 products in another order: relative 1e-4 is generous, a wrong monomial is off by far more)
    P = monomials(16, 16, 2)[0]
    expected = torch.einsum("nchw,khw->ck", seen["g"] * seen["u"], P)
    torch.testing.assert_close(conv.varcoef.weight.grad[:, :, 0, 0], expected, rtol=1e-4, atol=1e-6)
    optimizer.step()
    assert all(not torch.equal(w, b) for w, b in zip(fields, before))
    with torch.no_grad():
        assert F.cross_entropy(model(x), y) < loss


def test_only_restricts_and_a_second_convert_adds_nothing():
    model = torchvision.models.resnet18(weights=None)
    report = convert(model, variable_coefficients=2, only=["layer1.0.conv1", "conv1"])
    assert report.modulated == ["conv1", "layer1.0.conv1"]
    report = convert(model, variable_coefficients=2, only=lambda name, m: name.startswith("layer1."))
    assert report.modulated == ["layer1.0.conv2", "layer1.1.conv1", "layer1.1.conv2"]
    assert "3 modules" in str(report) and isinstance(report, ConvertReport)


def test_report_says_what_was_done_already():
    model = torchvision.models.resnet18(weights=None)
    first = convert(model, bc="neumann", variable_coefficients=2, only=lambda name, m: name.startswith("layer1."))
    assert first.had_boundary == [] and first.had_fields == []
    again = convert(model, bc="neumann", variable_coefficients=2, only=lambda name, m: name.startswith("layer1"))
    assert again.boundary == [] and again.modulated == []
    assert again.had_fields == first.modulated and set(first.boundary) <= set(again.had_boundary)
    assert "had it already" in str(again) and "had fields already" in str(again)
    other = convert(model, bc="periodic", only=["layer1.0.conv1"])
    assert other.boundary == ["layer1.0.conv1"] and other.had_boundary == []


def test_input_size_is_checked_on_a_copy_and_names_the_first_layer_too_small():
    model = torchvision.models.resnet18(weights=None)
    before = copy.deepcopy(model.state_dict())
    # reflect padding of 1 needs inputs of at least 2×2; 16×16 is 1×1 after layer3.0.conv1 (strides 2·2·2·2)
    with pytest.raises(ValueError, match=r"16×16 do not get through 'layer3\.0\.conv2'.*input is 1×1"):
        convert(model, bc="neumann", input_size=(1, 3, 16, 16))
    assert all(type(m) in (nn.Conv2d,) for m in model.modules() if isinstance(m, nn.Conv2d))  # untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # same tensors, no kernels run
    report = convert(model, bc="neumann", input_size=(1, 3, 64, 64))
    assert len(report.boundary) > 0 and model.training
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        convert(model, bc="neumann", input_size=(3, 64, 64))


def test_errors_say_what_to_do():
    model = nn.Conv2d(1, 1, 3)
    with pytest.raises(ValueError, match="nothing to do"):
        convert(model)
    with pytest.raises(ValueError, match="valid ones: dirichlet, neumann"):
        convert(model, bc="reflect")
    with pytest.raises(ValueError, match=r"no modules named \['nope'\]"):
        convert(model, variable_coefficients=2, only=["nope"])


def test_pdeconv_exports_convert_lazily():
    assert pdeconv.convert is convert
