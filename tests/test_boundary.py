"""pdeconv.boundary: padding as a boundary condition."""

import pytest
import torch
import torchvision
from torch import nn

from pdeconv import boundary as B
from pdeconv import stencil as S


def test_table_and_unknown_names():
    assert B.BOUNDARY_CONDITIONS == {
        "dirichlet": "zeros",
        "neumann": "reflect",
        "periodic": "circular",
        "replicate": "replicate",
    }
    with pytest.raises(ValueError, match="valid ones: dirichlet, neumann, periodic, replicate"):
        B.padding_mode("robin")
    with pytest.raises(ValueError, match="valid ones"):
        B.set_boundary(nn.Conv2d(1, 1, 3, padding=1), "reflect")  # a padding mode is not a BC name


def test_names_are_taken_in_any_case_and_kept_in_lower_case():
    import pdeconv.models as M
    from pdeconv.layers import DifferentialConv2d

    assert B.boundary_condition("Neumann") == "neumann" and B.padding_mode("PERIODIC") == "circular"
    conv = nn.Conv2d(1, 1, 3, padding=1)
    assert B.set_boundary(conv, "Neumann") == 1 and B.boundary_of(conv) == "neumann"
    torch.testing.assert_close(B.pad(torch.arange(3.0)[None, None, None].expand(1, 1, 3, 3), 1, "Periodic"),
                               B.pad(torch.arange(3.0)[None, None, None].expand(1, 1, 3, 3), 1, "periodic"))
    assert DifferentialConv2d(2, bc="Periodic").bc == "periodic"
    model = M.create("pde_resnet20", bc="Neumann")
    assert model.variant.bc == "neumann" and B.boundary_of(model.conv1) == "neumann"
    assert M.get_variant("seed+bc=Periodic").bc == "periodic"
    with pytest.raises(ValueError, match="unknown boundary condition 'Robin'; valid ones: dirichlet"):
        B.boundary_condition("Robin")


def test_set_boundary_on_resnet18_changes_exactly_the_padded_convs():
    model = torchvision.models.resnet18(weights=None)
    spatial = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1]
    pointwise = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] == 1]
    assert len(spatial) == 17 and len(pointwise) == 3  # 7×7 stem + 16 3×3; 3 downsample 1×1
    assert B.set_boundary(model, "neumann") == len(spatial)
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            assert m.padding_mode == ("reflect" if name in spatial else "zeros"), name
            assert B.boundary_of(m) == ("neumann" if name in spatial else "dirichlet")
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 48)
    out = model.eval()(x)
    assert out.shape == (1, 1000) and torch.isfinite(out).all()
    # the converted 7×7 stem convolves the mirror-padded image (pad 3, stride 2, no bias); float32, only the
    # summation order may differ: assert_close's float32 tolerances
    conv1 = model.conv1
    assert conv1.bias is None
    with torch.no_grad():
        reflected = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (3, 3, 3, 3), mode="reflect"),
                                               conv1.weight, stride=2)
        torch.testing.assert_close(conv1(x), reflected)
        assert not torch.allclose(conv1(x), torch.nn.functional.conv2d(x, conv1.weight, stride=2, padding=3))
    # switching back removes the reflect guard and restores the original behaviour
    assert B.set_boundary(model, "dirichlet") == len(spatial)
    assert all(not m._forward_pre_hooks for m in model.modules() if isinstance(m, nn.Conv2d))


def test_set_boundary_only():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 1))
    assert B.set_boundary(model, "periodic", only=["1"]) == 1
    assert [m.padding_mode for m in model] == ["zeros", "circular", "zeros"]
    assert B.set_boundary(model, "replicate", only=lambda name, m: m.out_channels == 2) == 2
    with pytest.raises(ValueError, match="no modules named"):
        B.set_boundary(model, "neumann", only=["nope"])


def test_reflect_on_too_small_input_is_a_clear_error():
    conv = nn.Conv2d(1, 1, 7, padding=3)
    B.set_boundary(conv, "neumann")
    with pytest.raises(ValueError, match=r"input is 3×9 \(H×W\)"):
        conv(torch.zeros(1, 1, 3, 9))
    with pytest.raises(ValueError, match="larger than the padding"):
        B.pad(torch.zeros(1, 1, 2, 2), 2, "neumann")


def test_too_small_input_after_set_boundary_names_the_layer_and_the_smallest_input():
    model = torchvision.models.resnet18(weights=None)  # 32×32 leaves 1×1 maps in layer4: nothing to reflect
    B.set_boundary(model, "neumann")
    with pytest.raises(ValueError, match=r"^layer4\.0\.conv2: Conv2d\(512, 512\): .*input is 1×1 .*"
                                         r"smallest input this model takes with bc='neumann' is 33×33"):
        model(torch.zeros(2, 3, 32, 32))
    assert model.training  # the search for that size left the model as it was
    assert model(torch.zeros(2, 3, 33, 33)).shape == (2, 1000)  # and that size works


def test_neumann_keeps_a_constant_image_constant_under_the_laplacian():
    u = torch.full((1, 1, 6, 9), 2.5, dtype=torch.float64)
    lap = S.laplacian(dtype=torch.float64)
    assert torch.equal(B.convolve(u, lap, "neumann"), torch.zeros_like(u))
    assert torch.equal(B.convolve(u, lap, "periodic"), torch.zeros_like(u))
    # zero padding leaks at the boundary: a pixel with n of its 4 neighbours inside gets (n − 4)·2.5, i.e.
    # −5 at the 4 corners, −2.5 along the other edge pixels, 0 inside (small exact binary numbers: equal bits)
    expected = torch.zeros_like(u)
    expected[..., 0, :] -= 2.5
    expected[..., -1, :] -= 2.5
    expected[..., :, 0] -= 2.5
    expected[..., :, -1] -= 2.5
    assert expected[0, 0, 0, 0] == expected[0, 0, -1, -1] == -5.0 and expected[0, 0, 0, 3] == -2.5
    assert torch.equal(B.convolve(u, lap, "dirichlet"), expected)


def test_neumann_is_the_mirror_about_the_boundary_sample():
    u = torch.arange(5.0).reshape(1, 1, 1, 5)
    assert B.pad(u, (2, 2, 0, 0), "neumann").flatten().tolist() == [2, 1, 0, 1, 2, 3, 4, 3, 2]
    assert B.pad(u, (2, 2, 0, 0), "replicate").flatten().tolist() == [0, 0, 0, 1, 2, 3, 4, 4, 4]
    assert B.pad(u, (2, 2, 0, 0), "periodic").flatten().tolist() == [3, 4, 0, 1, 2, 3, 4, 0, 1]
    assert B.pad(u, (2, 2, 0, 0), "dirichlet").flatten().tolist() == [0, 0, 0, 1, 2, 3, 4, 0, 0]
    # the central difference vanishes at the boundary node: ∂u/∂n = 0
    u = torch.rand(1, 1, 4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    du = B.convolve(u, S.dx(dtype=torch.float64), "neumann")
    assert torch.equal(du[..., 0], torch.zeros_like(du[..., 0])) and torch.equal(du[..., -1], du[..., 0])


def test_periodic_shift_commutes_with_convolution():
    torch.manual_seed(3)
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    B.set_boundary(conv, "periodic")
    u = torch.randn(1, 2, 7, 10, dtype=torch.float64)
    shift = lambda t: torch.roll(t, shifts=(2, -3), dims=(-2, -1))  # noqa: E731
    assert torch.allclose(conv(shift(u)), shift(conv(u)), atol=1e-12)
    conv0 = nn.Conv2d(2, 3, 3, padding=1).double()  # dirichlet does not commute
    assert not torch.allclose(conv0(shift(u)), shift(conv0(u)), atol=1e-6)


def test_convolve_matches_conv2d_and_keeps_2d_inputs_2d():
    torch.manual_seed(4)
    u = torch.randn(5, 8, dtype=torch.float64)
    k = torch.randn(3, 3, dtype=torch.float64)
    ref = torch.nn.functional.conv2d(u[None, None], k[None, None], padding=1)[0, 0]
    assert torch.allclose(B.convolve(u, k), ref)
    w = torch.randn(4, 1, 3, 3, dtype=torch.float64)
    x = torch.randn(2, 2, 6, 5, dtype=torch.float64)
    ref = torch.nn.functional.conv2d(x, w, padding=1, stride=2, groups=2)
    assert torch.allclose(B.convolve(x, w, stride=2, groups=2), ref)


def test_set_boundary_switches_pdeconv_layers_by_name():
    from pdeconv.layers import DifferentialConv2d

    model = nn.Sequential(DifferentialConv2d(2, 2, mix=False), nn.Conv2d(4, 4, 3, padding=1))
    assert B.set_boundary(model, "neumann") == 2
    assert model[0].bc == "neumann" and model[1].padding_mode == "reflect"
    u = torch.ones(1, 2, 5, 7)
    with torch.no_grad():
        model[0].weight.copy_(S.laplacian().expand(4, 1, 3, 3))
    assert torch.equal(model[0](u), torch.zeros(1, 4, 5, 7))  # a constant is harmonic under neumann


@pytest.mark.parametrize("mode", ["reflect", "circular", "replicate"])
@pytest.mark.parametrize("lrtb", [(1, 1, 1, 1), (2, 1, 0, 3), (3, 3, 2, 2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_ring_way_is_the_padding_with_its_gradient(mode, lrtb, channels_last):
    # the ring way (zero padding, ghosts copied in place) and its own backward against finite differences and
    # against PyTorch's padding of the same mode; it keeps the input's memory format
    from pdeconv.boundary import _ring_pad

    torch.manual_seed(3)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    ours = _ring_pad(x, lrtb, mode)
    assert torch.equal(ours, torch.nn.functional.pad(x, lrtb, mode=mode))  # copies: exact
    assert ours.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert torch.autograd.gradcheck(lambda t: _ring_pad(t, lrtb, mode), (x,))
    g = torch.randn_like(ours)
    ours = torch.autograd.grad(_ring_pad(x, lrtb, mode), x, g)[0]
    theirs = torch.autograd.grad(torch.nn.functional.pad(x, lrtb, mode=mode), x, g)[0]
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)  # sums of ≤ 9 terms in float64, any order


@pytest.mark.parametrize("bc", ["neumann", "periodic", "replicate"])
def test_pad_keeps_channels_last_whichever_way_it_takes(bc):
    from pdeconv import autotune

    x = torch.randn(2, 3, 6, 7).contiguous(memory_format=torch.channels_last)
    for way in ("aten", "ring"):
        with autotune.using(way):
            assert B.pad(x, 1, bc).is_contiguous(memory_format=torch.channels_last), way


@pytest.mark.parametrize("bc", ["neumann", "periodic", "replicate"])
def test_switched_convs_pad_through_pad_and_keep_their_parameters(bc):
    torch.manual_seed(4)
    conv = nn.Conv2d(3, 4, 3, padding=1, stride=2).double()
    state = {k: v.clone() for k, v in conv.state_dict().items()}
    B.set_boundary(conv, bc)
    assert isinstance(conv, (B.BoundaryConv2d, nn.Conv2d)) and conv.padding_mode == B.padding_mode(bc)
    assert all(torch.equal(v, state[k]) for k, v in conv.state_dict().items())
    x = torch.randn(2, 3, 6, 9, dtype=torch.float64, requires_grad=True)
    mode = {"neumann": "reflect", "periodic": "circular", "replicate": "replicate"}[bc]
    expected = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode=mode), conv.weight,
                                          conv.bias, stride=2)
    torch.testing.assert_close(conv(x), expected, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(conv, (x,))
    B.set_boundary(conv, "dirichlet")  # back to zero padding inside the convolution
    torch.testing.assert_close(conv(x), torch.nn.functional.conv2d(x, conv.weight, conv.bias, stride=2, padding=1))


@pytest.mark.parametrize("bc", ["dirichlet", "neumann", "periodic", "replicate"])
def test_convolve_along_one_axis_is_the_column_or_row_kernel(bc):
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, 3, 9, 11, generator=g, dtype=torch.float64)
    taps = torch.randn(5, generator=g, dtype=torch.float64)
    # oracle: the 2-D convolution with a 5×1 (column) or 1×5 (row) kernel under the same boundary condition;
    # different kernels sum in different orders: float64 round-off only
    torch.testing.assert_close(B.convolve_along(u, taps, -2, bc), B.convolve(u, taps[:, None], bc))
    torch.testing.assert_close(B.convolve_along(u, taps, 3, bc), B.convolve(u, taps[None, :], bc))
    valid = B.convolve_along(u, taps, -1, None, stride=2)  # centres 2, 4, 6, 8
    manual = torch.stack([(u[..., c - 2:c + 3] * taps).sum(-1) for c in (2, 4, 6, 8)], -1)
    torch.testing.assert_close(valid, manual)
    with pytest.raises(ValueError, match="odd length"):
        B.convolve_along(u, taps[:4], 0)


def test_set_boundary_changes_pdeconvs_own_layers_through_set_bc_and_nothing_else():
    """Only PyTorch's padded convolutions and pdeconv's BoundaryConditioned layers change; a layer that cannot take
    the condition refuses it (SymmetricHyperbolic2d would silently lose its skew-adjointness under reflection), and
    a foreign module that merely has a string attribute ``bc`` is left alone."""
    from torch import nn

    from pdeconv.errors import PdeconvError
    from pdeconv.layers import DifferentialConv2d, SymmetricHyperbolic2d

    class Foreign(nn.Module):
        bc = "dirichlet"  # not pdeconv's: no set_bc, not a convolution

    model = nn.Sequential(DifferentialConv2d(2, 2), Foreign(), nn.Conv2d(2, 2, 3, padding=1))
    assert B.set_boundary(model, "Periodic") == 2
    assert model[0].bc == "periodic" and model[1].bc == "dirichlet" and model[2].padding_mode == "circular"
    hyper = nn.Sequential(SymmetricHyperbolic2d(2, bc="dirichlet"))
    assert B.set_boundary(hyper, "periodic") == 1 and hyper[0].bc == "periodic"
    with pytest.raises(PdeconvError, match="skew-adjoint"):
        B.set_boundary(hyper, "neumann")
