"""pdeconv.analysis reads known stencils back as exactly their operators; the CLI writes its report."""

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pdeconv import stencil
from pdeconv.analysis import (
    ORDERS,
    analyze_model,
    first_order_matrices,
    spatial_convs,
    variant_summary,
)
from pdeconv.layers import DifferentialConv2d, VariableCoefficients
from pdeconv.regularize import hyperbolicity


def conv_from(kernels: torch.Tensor, groups: int = 1, **kw) -> nn.Conv2d:
    """An nn.Conv2d (no bias) holding ``kernels`` of shape (C_out, C_in/groups, kh, kw)."""
    c_out, c_in_g, kh, kw_ = kernels.shape
    conv = nn.Conv2d(
        c_in_g * groups, c_out, (kh, kw_), padding=(kh // 2, kw_ // 2), groups=groups, bias=False, **kw
    )
    with torch.no_grad():
        conv.weight.copy_(kernels)
    return conv


def diagonal(kernel: torch.Tensor, coefficients: list[float]) -> torch.Tensor:
    """C×C weight with ``coefficients[c] · kernel`` on the diagonal: a system of uncoupled PDEs."""
    C = len(coefficients)
    w = torch.zeros(C, C, *kernel.shape)
    for c, a in enumerate(coefficients):
        w[c, c] = a * kernel
    return w


def spectrum(entry) -> list[float]:
    return [entry.order_spectrum[o] for o in ORDERS]


# ------------------------------------------------------------------------------------------------ operators


def test_known_stencils_are_read_back_exactly():
    model = nn.Sequential(
        conv_from(diagonal(stencil.identity(), [1.0, -2.0])),
        nn.ReLU(),
        conv_from(diagonal(stencil.dx(), [3.0, 0.5])),
        conv_from(diagonal(stencil.dy(), [1.0, 1.0])),
        conv_from(diagonal(stencil.laplacian(), [0.25, 2.0])),
        conv_from(diagonal(stencil.laplacian(points=9), [1.0, 1.0])),
        conv_from(diagonal(stencil.dx() + stencil.dy(), [1.0, 1.0])),
    )
    a = analyze_model(model)
    assert [e.name for e in a.layers] == ["0", "2", "3", "4", "5", "6"]
    identity, dx, dy, lap5, lap9, grad = a.layers
    assert spectrum(identity) == pytest.approx([1, 0, 0, 0], abs=1e-12)
    assert identity.dominant == ["1"] and identity.laplacian_like == 0
    assert spectrum(dx) == pytest.approx([0, 1, 0, 0], abs=1e-12)
    assert dx.dominant == ["∂x"] and dx.operator_shares["∂x"] == pytest.approx(1, abs=1e-12)
    assert dx.describe() == "∂x dominates; Laplacian-like part 0%"
    # orientation: the row-axis difference is ∂y, never ∂x
    assert dy.dominant == ["∂y"] and dy.operator_shares["∂x"] == 0
    for lap in (lap5, lap9):  # both are exactly ∂x² + ∂y² up to order 3; the 9-point one adds ∂x²∂y²/6
        assert lap.dominant == ["∂x²", "∂y²"] or lap.dominant == ["∂y²", "∂x²"]
    assert spectrum(lap5) == pytest.approx([0, 0, 1, 0], abs=1e-12)
    assert lap5.laplacian_like == pytest.approx(1, abs=1e-12)
    assert lap5.describe() == "∂x², ∂y² dominate; Laplacian-like part 100%"
    assert spectrum(lap9) == pytest.approx([0, 0, 72 / 73, 1 / 73], abs=1e-12)  # energies 1 + 1 and (1/6)²
    assert lap9.laplacian_like == pytest.approx(72 / 73, abs=1e-12)
    assert grad.dominant == ["∂x", "∂y"] and grad.operator_shares["∂y"] == pytest.approx(0.5, abs=1e-12)


def test_first_order_matrices_are_the_coefficients():
    C = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    dx, dy = stencil.dx(), stencil.dy()
    model = nn.Sequential(conv_from(C[:, :, None, None] * dx + 2 * C.T[:, :, None, None] * dy))
    A = first_order_matrices(model, "0")
    torch.testing.assert_close(A["∂x"], C.double(), rtol=0, atol=1e-12)
    torch.testing.assert_close(A["∂y"], 2 * C.T.double(), rtol=0, atol=1e-12)
    # at grid spacing h the same kernels are (1/h)·∂x: coefficients scale by h^order
    A = first_order_matrices(model, "0", h=0.5)
    torch.testing.assert_close(A["∂x"], 0.5 * C.double(), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="valid ones: 0"):
        first_order_matrices(model, "conv")


@pytest.mark.parametrize("dilation", [1, 2])
def test_first_order_matrices_predict_the_convolution_of_ramps(dilation):
    """Orientation end to end on a non-square image: K ⋆ (x − x0) = A_∂x at x = x0 (and y likewise)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 2, 3, padding=dilation, dilation=dilation, bias=False).double()
    A = first_order_matrices(nn.Sequential(conv), "0")
    H, W, y0, x0 = 7, 12, 3, 5
    y, x = torch.meshgrid(torch.arange(H) - y0, torch.arange(W) - x0, indexing="ij")
    with torch.no_grad():
        out_x = conv(x.double().expand(1, 3, H, W))[0, :, y0, x0]
        out_y = conv(y.double().expand(1, 3, H, W))[0, :, y0, x0]
    torch.testing.assert_close(out_x, A["∂x"].sum(1))
    torch.testing.assert_close(out_y, A["∂y"].sum(1))
    assert not torch.allclose(A["∂x"], A["∂y"])


def test_dilation_is_a_wider_grid_spacing():
    model = nn.Sequential(conv_from((stencil.identity() + stencil.dx())[None, None], dilation=2))
    e = analyze_model(model).layers[0]
    assert e.dilation == (2, 2) and e.dominant == ["∂x"]
    assert first_order_matrices(model, "0")["∂x"].item() == pytest.approx(2.0)  # (u[x+2] − u[x−2]) / 2
    assert spectrum(e) == pytest.approx([1 / 5, 4 / 5, 0, 0], abs=1e-12)  # u + 2·∂x u: energies 1 and 4


def test_one_dimensional_kernels_are_embedded_and_others_skipped():
    row = stencil.dx()[1:2]  # (1, 3): [-½, 0, ½] along x
    model = nn.Sequential(
        conv_from(row[None, None]),
        conv_from(row.T[None, None]),  # (3, 1): along y
        nn.Conv2d(1, 1, 1),  # a matrix of constants
        nn.Conv2d(1, 1, 2),  # even: no centre
        nn.Conv2d(1, 1, (3, 5)),  # neither square nor 1-D
    )
    a = analyze_model(model)
    assert [(e.name, e.kernel_size, e.dominant) for e in a.layers] == [("0", 3, ["∂x"]), ("1", 3, ["∂y"])]
    assert spectrum(a.layers[1]) == pytest.approx([0, 1, 0, 0], abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    groups=st.sampled_from([1, 2, 4]),
    k=st.sampled_from([3, 5]),
    dilation=st.sampled_from([1, 2]),
    h=st.sampled_from([1.0, 0.25]),
)
def test_shares_are_fractions_of_the_energy(seed, groups, k, dilation, h):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(4, 8, k, groups=groups, dilation=dilation))
    e = analyze_model(model, h=h).layers[0]
    assert sum(e.order_spectrum.values()) == pytest.approx(1, abs=1e-12)
    assert sum(e.operator_shares.values()) == pytest.approx(1, abs=1e-12)
    assert len(e.operator_shares) == k * k
    shares = list(e.operator_shares.values())
    assert shares == sorted(shares, reverse=True)
    assert sum(e.operator_shares[n] for n in e.dominant) > 0.5
    assert sum(e.operator_shares[n] for n in e.dominant[:-1]) <= 0.5
    assert 0 <= e.laplacian_like <= e.order_spectrum["2"] + 1e-12
    assert e.groups == groups and (e.depthwise is not None) == (groups == 4)


def test_energy_is_normalised_by_the_spacing_h():
    """At spacing h, M[a, b] scales by h^(a+b): order-n energy by h^(2n)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 2, 3))
    s1 = spectrum(analyze_model(model).layers[0])
    s2 = spectrum(analyze_model(model, h=0.5).layers[0])
    raw = [s1[0], s1[1] / 4, s1[2] / 16]  # orders 0..2; order ≥ 3 mixes 3 and 4
    for n in range(3):
        assert s2[n] / s2[0] == pytest.approx(raw[n] / raw[0])


def test_random_layers_have_the_expected_spectrum():
    """i.i.d. kernel entries: E[M[a, b]²] ∝ s_a·s_b with s = Σ_p V[a, p]² = 3, 2, ½, so orders 0, 1, 2, ≥ 3
    hold 9 : 12 : 7 : 2.25; (M_xx + M_yy)²/2 has mean (3/2 + 3/2 + 2·1)/2 = 2.5 (the two are correlated)."""
    torch.manual_seed(5)
    e = analyze_model(nn.Sequential(nn.Conv2d(128, 128, 3))).layers[0]  # 16384 kernels
    assert spectrum(e) == pytest.approx([9 / 30.25, 12 / 30.25, 7 / 30.25, 2.25 / 30.25], abs=0.01)
    assert e.laplacian_like == pytest.approx(2.5 / 30.25, abs=0.01)
    # 1 − (skew half of order 1 + orders ≥ 2 + symmetric half of order 0) / E
    assert e.hyperbolicity == pytest.approx(1 - (6 + 9.25 + 4.5) / 30.25, abs=0.01)


def test_zero_layer_has_an_empty_spectrum():
    e = analyze_model(nn.Sequential(conv_from(torch.zeros(2, 2, 3, 3)))).layers[0]
    assert spectrum(e) == [0, 0, 0, 0] and e.dominant == [] and e.describe() == "all kernels are zero"


def test_analysis_rejects_bad_options():
    model = nn.Sequential(nn.Conv2d(1, 1, 3))
    with pytest.raises(ValueError, match="grid spacing"):
        analyze_model(model, h=0)
    with pytest.raises(ValueError, match="image_size"):
        analyze_model(model, image_size=(0, 4))


# ------------------------------------------------------------------------------------------------ groups


def test_grouped_layer_is_block_diagonal():
    w = torch.zeros(4, 2, 3, 3)
    w[0, 0], w[1, 1] = stencil.dx(), stencil.dx()  # group 0: ∂x on both channels
    w[2, 0], w[3, 1] = stencil.laplacian(), stencil.laplacian()  # group 1: Laplacian
    model = nn.Sequential(conv_from(w, groups=2))
    e = analyze_model(model).layers[0]
    assert e.groups == 2 and e.depthwise is None
    assert spectrum(e) == pytest.approx([0, 1 / 3, 2 / 3, 0], abs=1e-12)  # energies 2·1 and 2·(1 + 1)
    assert e.laplacian_like == pytest.approx(2 / 3, abs=1e-12)
    A = first_order_matrices(model, "0")["∂x"]
    torch.testing.assert_close(A, torch.diag(torch.tensor([1.0, 1, 0, 0])).double(), rtol=0, atol=1e-12)


def four_operators() -> torch.Tensor:
    return torch.stack([stencil.identity(), stencil.dx(), stencil.dy(), stencil.laplacian()]).float()


def test_depthwise_span_counts_independent_operators():
    ops = four_operators()
    varied = torch.cat([ops, 2 * ops])[:, None]  # channel 0: 1, ∂x, ∂y, Δ; channel 1: the same doubled
    same = torch.cat([stencil.dx()[None].float() * torch.tensor([1.0, -2, 3, 0.5])[:, None, None]] * 2)[
        :, None
    ]
    a = analyze_model(nn.Sequential(conv_from(varied, groups=2), conv_from(same, groups=2)))
    span, one = a.layers[0].depthwise, a.layers[1].depthwise
    assert span.multiplier == 4 and span.span_dims == [4, 4] and span.mean_span_dim == 4
    # moment rows e_0, e_1, e_2, e_3 + e_5 are orthogonal: σ = √2, 1, 1, 1
    assert span.singular_values[0] == pytest.approx([math.sqrt(2), 1, 1, 1])
    assert span.singular_values[1] == pytest.approx([2 * math.sqrt(2), 2, 2, 2])
    assert span.participation[0] == pytest.approx(25 / 7)
    assert one.span_dims == [1, 1] and one.participation == pytest.approx([1, 1])
    assert variant_summary(a)["depthwise_span_dim"] == pytest.approx(2.5)


@pytest.mark.parametrize("order", [None, 2])
def test_differential_conv_kernels_are_analysed_like_their_conv2d(order):
    torch.manual_seed(2)
    layer = DifferentialConv2d(3, multiplier=4, order=order, mix=True)
    with torch.no_grad():
        if order is None:
            layer.weight.copy_(four_operators().repeat(3, 1, 1)[:, None])
        else:  # coefficients over 1, ∂x, ∂y, ∂x², ∂x∂y, ∂y²
            layer.coefficients.copy_(
                torch.tensor(
                    [[1.0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0], [0, 0, 0, 1, 0, 1]]
                ).repeat(3, 1)
            )
    a = analyze_model(nn.Sequential(layer))
    assert len(a.layers) == 1  # the 1×1 mix is a matrix of constants, not a spatial conv
    e = a.layers[0]
    assert (e.kind, e.in_channels, e.out_channels, e.groups) == ("DifferentialConv2d", 3, 12, 3)
    assert e.depthwise.span_dims == [4, 4, 4]
    # per channel the operators 1, ∂x, ∂y, ∂x² + ∂y² hold moment energies 1, 1, 1, 1 + 1 (of E = 5 per
    # channel, 15 in all): orders 0, 1, 2 get 1/5, 2/5, 2/5 and each of the five operators 1/5
    assert spectrum(e) == pytest.approx([0.2, 0.4, 0.4, 0.0], abs=1e-12)
    shares = {"1": 0.2, "∂x": 0.2, "∂y": 0.2, "∂x²": 0.2, "∂y²": 0.2}
    expected = {
        stencil.operator_name(ab): shares.get(stencil.operator_name(ab), 0.0)
        for ab in stencil.multi_indices(4, size=3)
    }
    assert len(expected) == 9 and e.operator_shares == pytest.approx(expected, abs=1e-12)
    assert e.laplacian_like == pytest.approx(3 * (1 + 1) ** 2 / 2 / 15, abs=1e-12)  # Σ (M_xx + M_yy)²/2 / E


# -------------------------------------------------------------------------------------------- scores, fields


def test_hyperbolicity_comes_from_regularize():
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(4, 4, 3),
        nn.Conv2d(4, 6, 3),
        conv_from(diagonal(stencil.dx(), [1, 2])),
        conv_from(diagonal(stencil.laplacian(), [1, 2])),
        conv_from(diagonal(stencil.identity() + stencil.dx(), [1, 1])),
    )
    a = analyze_model(model)
    scores = hyperbolicity(model)
    assert a.layers[0].hyperbolicity == pytest.approx(scores["0"])
    assert a.layers[1].hyperbolicity is None  # C_in ≠ C_out: not scored
    assert a.layers[2].hyperbolicity == pytest.approx(1)  # diagonal ∂x: symmetric hyperbolic
    assert a.layers[3].hyperbolicity == pytest.approx(0, abs=1e-12)  # a Laplacian: all energy second order
    # (1 + ∂x)·I on 2 channels: energies ‖I‖² = 2 at order 0 (symmetric, penalised) and 2 at order 1
    # (symmetric, free): 1 − 2/4
    assert a.layers[4].hyperbolicity == pytest.approx(0.5, abs=1e-12)
    assert variant_summary(a)["hyperbolicity"] == pytest.approx((scores["0"] + 1 + 0 + 0.5) / 4)


def test_coefficient_fields_are_sampled_at_pixel_centres():
    vc = VariableCoefficients(2)
    with torch.no_grad():
        vc.weight.zero_()
        vc.weight[0, :3, 0, 0] = torch.tensor([1.0, 2.0, 0.0])  # a_0 = 1 + 2x
        vc.weight[1, 5, 0, 0] = 1.0  # a_1 = y²
    a = analyze_model(nn.Sequential(nn.Conv2d(2, 2, 3), vc), image_size=(5, 8))
    (f,) = a.coefficient_fields
    assert f.name == "1" and f.monomials == ["1", "x", "y", "x²", "xy", "y²"] and f.resolution == (5, 8)
    assert f.coefficients[0] == [1.0, 2.0, 0, 0, 0, 0]
    x = (2 * torch.arange(8) + 1) / 8 - 1  # x right along the 8 columns
    y = (2 * torch.arange(5) + 1) / 5 - 1  # y down the 5 rows
    torch.testing.assert_close(f.fields[0], (1 + 2 * x).expand(5, 8))
    torch.testing.assert_close(f.fields[1], (y**2)[:, None].expand(5, 8))
    assert f.field_range == pytest.approx((1 - 2 * 7 / 8, 1 + 2 * 7 / 8))
    constant = analyze_model(nn.Sequential(VariableCoefficients(3))).coefficient_fields[0]
    assert constant.spatial_variation == 0 and constant.relative_variation == 0 and constant.sign_changing == 0
    assert f.sign_changing == 0.5  # 1 + 2x is negative left of x = −1/2, y² is never
    # std / rms per channel, by hand: a_0 = 1 + 2x, a_1 = y² on the (5, 8) grid of pixel centres
    a0, a1 = 1 + 2 * x.double(), y.double() ** 2
    by_hand = [(a.var(unbiased=False) / a.square().mean()).sqrt().item() for a in (a0, a1)]
    assert f.relative_variation == pytest.approx(sum(by_hand) / 2, rel=1e-5)
    with torch.no_grad():
        vc.weight.zero_()
        vc.weight[0, 1, 0, 0] = 3.0  # a_0 = 3x: mean zero over the centred grid, so std = rms; a_1 ≡ 0 counts 0
    (g,) = analyze_model(nn.Sequential(vc), image_size=(5, 8)).coefficient_fields
    assert g.relative_variation == pytest.approx(0.5, rel=1e-6) and g.sign_changing == 0.5  # 3x changes sign, 0 not
    summary = variant_summary(analyze_model(nn.Sequential(vc), image_size=(5, 8)))
    assert summary["field_variation"] == pytest.approx(0.5) and summary["field_sign_changing"] == 0.5
    plain = variant_summary(analyze_model(nn.Sequential(nn.Conv2d(2, 2, 3))))
    assert plain["field_variation"] is None and plain["field_sign_changing"] is None


def test_torchvision_resnet18_has_one_entry_per_spatial_conv():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    expected = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1]
    a = analyze_model(model)
    assert len(a.layers) == 17 and [e.name for e in a.layers] == expected == [
        c.name for c in spatial_convs(model)
    ]
    assert a.layers[0].kernel_size == 7 and a.layers[0].stride == (2, 2)
    assert all(sum(e.order_spectrum.values()) == pytest.approx(1) for e in a.layers)
    scored = [e for e in a.layers if e.hyperbolicity is not None]
    assert len(scored) == 13  # the C→C 3×3 convs (not conv1, not the four C→2C ones)
    data = json.loads(a.to_json())
    assert len(data["layers"]) == 17 and data["summary"]["spatial_convs"] == 17
    assert data["summary"]["depthwise_span_dim"] is None
    table = a.summary_table().splitlines()
    assert len(table) == 2 + 17 and "layer4.1.conv2" in table[-1]


def test_analysis_ignores_the_device_and_dtype_of_the_weights():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(3, 3, 3))
    a32 = analyze_model(model)
    a64 = analyze_model(model.double())
    assert spectrum(a32.layers[0]) == pytest.approx(spectrum(a64.layers[0]), abs=1e-12)
    assert model[0].weight.dtype == torch.float64  # the analysis does not touch the model


# -------------------------------------------------------------------------------------------- runs and CLI


def train_tiny_run(out, model_name: str, build) -> None:
    """One epoch of ``engine.train`` on 8 random 12×12 images: a real run directory and checkpoint."""
    from pdeconv import engine
    from pdeconv.data import dataset_info

    info = dataset_info("fashion-mnist")
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, info.in_chans, 12, 12, generator=g), torch.arange(8) % info.num_classes)]
    config = engine.TrainConfig(
        model=model_name, variant="seed", epochs=1, batch_size=8, out=str(out), progress=False, device="cpu"
    )
    engine.train(config, build, loaders=(batches, batches, info))


def written(out) -> set[str]:
    return {p.name for p in out.iterdir()}


def test_cli_analyzes_a_training_run(tmp_path, capsys):
    from pdeconv import engine, models
    from pdeconv.cli import main
    from pdeconv.run import model_from_run

    run = tmp_path / "run"
    torch.manual_seed(0)
    train_tiny_run(
        run,
        "pde_resnet20",
        lambda info: models.create(
            "pde_resnet20", variant="seed", num_classes=info.num_classes, in_chans=info.in_chans
        ),
    )
    model = model_from_run(run)
    saved = engine.load_checkpoint(run / engine.CHECKPOINT)["model"]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, saved[key])  # the trained weights, not a fresh init

    out = tmp_path / "analysis"
    assert main(["analyze", str(run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    files = written(out)
    assert files == {
        "analysis.json",
        "summary.md",
        "order_spectrum.png",
        "first_order_layer1.0.conv1.png",
        "coefficient_fields.png",
    }  # no C→C 3×3 conv in a depthwise model: its first depthwise layer, not the 1→16 stem
    data = json.loads((out / "analysis.json").read_text())
    assert len(data["layers"]) == 19 and len(data["coefficient_fields"]) == 18  # one per 3×3 operator
    assert data["layers"][1]["depthwise"]["multiplier"] == 4
    # the summary is that of the checkpoint's model analysed in process (JSON keeps float64 exactly; the
    # values are shares ≤ 1 or span dimensions ≤ 4, so abs 1e-12)
    expected = analyze_model(model)
    assert data["summary"] == pytest.approx(variant_summary(expected), abs=1e-12)
    assert data["summary"]["spatial_convs"] == 19 and data["summary"]["depthwise_span_dim"] is not None
    changing = sum(round(f.sign_changing * f.channels) for f in expected.coefficient_fields)
    assert f"Over all layers {changing} of 672 fields" in (out / "summary.md").read_text()  # 2·3·(16+32+64)
    # the printed table: one header row and one row per spatial convolution, in module order
    rows = [line for line in printed.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 19
    assert [row.split(" | ")[1] for row in rows[1:]] == [e.name for e in expected.layers]
    assert "wrote analysis.json" in printed

    out2 = tmp_path / "from_checkpoint"
    args = ["analyze", str(run / engine.CHECKPOINT), "--out", str(out2), "--layer", "layer1.0.conv1"]
    assert main(args) == 0
    assert "first_order_layer1.0.conv1.png" in written(out2)
    assert json.loads((out2 / "analysis.json").read_text())["layers"] == data["layers"]


def test_cli_torchvision_and_model_names(tmp_path, capsys):
    from pdeconv.cli import main

    assert (
        main(["analyze", "--torchvision", "resnet18", "--num-classes", "10", "--out", str(tmp_path / "tv")])
        == 0
    )
    data = json.loads((tmp_path / "tv" / "analysis.json").read_text())
    assert len(data["layers"]) == 17 and data["model"] == "ResNet"
    assert written(tmp_path / "tv") == {  # no VariableCoefficients layer: no coefficient_fields.png
        "analysis.json",
        "summary.md",
        "order_spectrum.png",
        "first_order_layer1.0.conv1.png",
    }

    args = ["analyze", "pde_resnet20", "--variant", "dw4", "--in-chans", "1", "--num-classes", "10"]
    assert main([*args, "--out", str(tmp_path / "dw4")]) == 0
    data = json.loads((tmp_path / "dw4" / "analysis.json").read_text())
    assert data["layers"][0]["in_channels"] == 1
    assert [e["depthwise"] is not None for e in data["layers"]] == [False] + [True] * 18
    assert "## Depthwise spans" in (tmp_path / "dw4" / "summary.md").read_text()


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    from pdeconv.cli import main

    tiny = tmp_path / "tiny"  # a run of a model pdeconv cannot rebuild by name
    train_tiny_run(
        tiny,
        "my_tiny_net",
        lambda info: nn.Sequential(
            nn.Conv2d(info.in_chans, 4, 3),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, info.num_classes),
        ),
    )
    not_a_checkpoint = tmp_path / "notes.pt"
    not_a_checkpoint.write_text("hello")
    state_dict, whole = tmp_path / "sd.pt", tmp_path / "whole.pt"
    torch.save(nn.Conv2d(1, 1, 3).state_dict(), state_dict)
    torch.save(nn.Conv2d(1, 1, 3), whole)
    cases = {
        "nonexistent_model": "neither an existing run directory",
        str(not_a_checkpoint): "not a PyTorch checkpoint (neither a zip archive nor a pickle)",
        str(state_dict): "a state dict (tensors by name), not a pdeconv run's checkpoint. Analyse it as the model it "
                         "belongs to: its pdeconv model name (with its --variant) or --torchvision NAME, with "
                         "--weights FILE",
        str(whole): "holds pickled Python objects (a whole model saved with torch.save(model)?)",
        str(tmp_path): "holds no checkpoint.pt",
        str(tiny): "'my_tiny_net' is not a pdeconv model",
    }
    capsys.readouterr()
    for source, message in cases.items():
        assert main(["analyze", source, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("pdeconv analyze: error: ") and message in err and err.count("\n") == 1
        assert "weights_only=False" not in err and "\x1b" not in err  # no unsafe advice, no terminal codes
    assert main(["analyze", "--torchvision", "resnet19", "--out", str(tmp_path / "out")]) == 2
    assert "valid ones: alexnet" in capsys.readouterr().err
    assert main(["analyze", "pde_resnet20", "--layer", "nope", "--out", str(tmp_path / "out")]) == 2
    assert "no spatial convolution named 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_state_dict_is_analysed_as_the_model_it_belongs_to(tmp_path, capsys):
    from pdeconv.cli import main
    from pdeconv.models import pde_resnet20

    torch.manual_seed(0)
    model = pde_resnet20(in_chans=1, variant="dw4")
    torch.save(model.state_dict(), tmp_path / "w.pt")
    assert main(["analyze", "pde_resnet20", "--variant", "dw4", "--in-chans", "1", "--weights", str(tmp_path / "w.pt"),
                 "--out", str(tmp_path / "a")]) == 0
    direct = variant_summary(analyze_model(model.eval()))  # the trained weights, not a random init
    saved = json.loads((tmp_path / "a" / "analysis.json").read_text())["summary"]
    assert saved["hyperbolicity"] == pytest.approx(direct["hyperbolicity"], abs=1e-12)
    assert saved["depthwise_span_dim"] == pytest.approx(direct["depthwise_span_dim"], abs=1e-12)
    capsys.readouterr()
    assert main(["analyze", "pde_resnet20", "--weights", str(tmp_path / "w.pt"), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err  # a baseline model: the dw4 weights' keys are unexpected
    assert "do not fit pde_resnet20 (Unexpected key(s)" in err and "check --variant" in err


def test_the_default_layer_drawn_is_a_layer_of_the_blocks_not_the_stem():
    from pdeconv.analysis.report import default_layer
    from pdeconv.models import create

    # baseline: the first C→C 3×3 convolution; seed (no dense C→C 3×3 at all): its first depthwise differential
    # layer, not the 3→16 stem that comes first in module order
    assert default_layer(analyze_model(create("pde_resnet20"))) == "layer1.0.conv1"
    seed = analyze_model(create("pde_resnet20", variant="seed"))
    assert seed.layers[0].name == "conv1" and default_layer(seed) == "layer1.0.conv1"
    assert seed.layer("layer1.0.conv1").groups == seed.layer("layer1.0.conv1").in_channels == 16
    stem_only = analyze_model(nn.Sequential(nn.Conv2d(3, 8, 3)))
    assert default_layer(stem_only) == stem_only.layers[0].name

