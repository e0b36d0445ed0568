"""pdeconv.layers.differential: the essay's depthwise ×m differential convolution."""

import pytest
import torch
import torch.nn.functional as F
from fixtures.tolerance import assert_same_sums
from torch import nn

from pdeconv import boundary
from pdeconv import stencil as S
from pdeconv.layers import DifferentialConv2d
from pdeconv.layers.differential import PATHS, depthwise_conv

NAMES = ["1", "∂x", "∂y", "∂x²", "∂x∂y", "∂y²"]


def _high_moments(kernel, order):
    M = S.moments(kernel.detach().double())
    a, b = torch.meshgrid(torch.arange(3), torch.arange(3), indexing="ij")
    return M[..., a + b > order]


@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_constrained_kernels_have_no_moments_above_their_order_also_after_a_step(order):
    torch.manual_seed(0)
    layer = DifferentialConv2d(3, 4, order=order, bc="neumann")
    assert layer.coefficients.shape == (12, len(S.multi_indices(order, size=3)))
    assert list(layer.operators()) == [S.operator_name(ab) for ab in S.multi_indices(order, size=3)]
    assert _high_moments(layer.kernel, order).abs().max() < 1e-6
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    layer(torch.randn(2, 3, 5, 8)).square().sum().backward()
    opt.step()
    assert _high_moments(layer.kernel, order).abs().max() < 1e-6


def test_free_kernels_do_have_high_moments():  # so that the test above can fail
    torch.manual_seed(0)
    assert _high_moments(DifferentialConv2d(3, 4).kernel, 2).abs().max() > 1e-2


@pytest.mark.parametrize("C, c_out", [(8, 8), (6, 10)])
def test_parameter_counts_match_the_essays_block(C, c_out):
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    depthwise = nn.Conv2d(C, C * 4, 3, padding=1, groups=C, bias=False)
    essay = nn.Sequential(depthwise, nn.Conv2d(C * 4, c_out, 1, bias=False))
    assert count(DifferentialConv2d(C, 4, out_channels=c_out)) == count(essay) == C * 4 * 9 + C * 4 * c_out
    assert count(DifferentialConv2d(C, 4, order=2, out_channels=c_out)) == C * 4 * 6 + C * 4 * c_out
    assert count(DifferentialConv2d(C, 4, mix=False)) == C * 4 * 9


@pytest.mark.parametrize("stride", [1, 2])
def test_free_unmixed_layer_is_the_essays_grouped_conv3x3(stride):
    torch.manual_seed(1)
    C = 3
    conv = nn.Conv2d(C, C * 4, 3, stride=stride, padding=1, groups=C, bias=False)  # conv3x3(w, w*4, s, w)
    layer = DifferentialConv2d(C, 4, mix=False, stride=stride)
    layer.load_state_dict(conv.state_dict())  # the same key: "weight"
    assert list(layer.state_dict()) == ["weight"] and layer.weight.shape == (C * 4, 1, 3, 3)
    u = torch.randn(2, C, 5, 8)
    # the layer runs its depthwise conv on channels-last input (another kernel, another order of the 9 products)
    assert_same_sums(layer.eval()(u), conv(u), terms=9, scale=F.conv2d(u.abs(), conv.weight.abs(), stride=stride,
                                                                        padding=1, groups=C))


def test_default_init_is_nn_conv2d_init_in_the_same_rng_order():
    torch.manual_seed(2)
    ref = nn.Sequential(nn.Conv2d(3, 12, 3, groups=3, bias=False), nn.Conv2d(12, 5, 1, bias=False))
    torch.manual_seed(2)
    layer = DifferentialConv2d(3, 4, out_channels=5)
    assert torch.equal(layer.weight, ref[0].weight) and torch.equal(layer.pointwise.weight, ref[1].weight)
    layer.reset_parameters()
    assert not torch.equal(layer.weight, ref[0].weight)


def test_constrained_init_matches_the_free_kernel_norm():
    torch.manual_seed(3)
    free = DifferentialConv2d(1000, 4).kernel.square().sum((1, 2, 3)).mean()
    for order in (1, 2):
        constrained = DifferentialConv2d(1000, 4, order=order).kernel.square().sum((1, 2, 3)).mean()
        assert abs(constrained / free - 1) < 0.05, order
    assert abs(free - 9 / 27) < 0.01  # kaiming-uniform with fan-in 9: U(-1/3, 1/3)


def test_channel_c_feeds_outputs_c_times_m_to_c_times_m_plus_m():
    torch.manual_seed(4)
    layer = DifferentialConv2d(3, 4, mix=False)
    u = torch.zeros(1, 3, 5, 8)
    u[:, 1] = torch.randn(5, 8)
    live = layer(u).abs().sum((0, 2, 3)) > 0
    assert live.tolist() == [False] * 4 + [True] * 4 + [False] * 4


def test_laplacian_kills_constants_under_neumann_but_not_dirichlet():
    layers = {bc: DifferentialConv2d(2, 1, order=2, bc=bc, mix=False) for bc in ("neumann", "periodic", "dirichlet")}
    u = torch.full((1, 2, 5, 8), 3.0)
    for layer in layers.values():
        with torch.no_grad():
            layer.coefficients.zero_()
            layer.coefficients[:, [3, 5]] = 1.0  # ∂x² + ∂y²
        # the kernel comes through the inverse of the moment map: the 5-point stencil up to its float rounding
        torch.testing.assert_close(layer.kernel[0, 0], S.laplacian(dtype=torch.float32), rtol=0, atol=1e-6)
    # Σ K = 0 to rounding, so a constant is harmonic; 9 terms of size ≤ 2·3 in float32
    for bc in ("neumann", "periodic"):
        assert layers[bc](u).abs().max() < 9 * 6 * 1e-6, bc
    out = layers["dirichlet"](u)
    assert out[..., 1:-1, 1:-1].abs().max() < 1e-4 and abs(out[0, 0, 0, 0] + 6.0) < 1e-4  # 2 zero ghosts at a corner


@pytest.mark.parametrize("bc", ["dirichlet", "neumann", "periodic", "replicate"])
@pytest.mark.parametrize("shape, strided", [((5, 8), (3, 4)), ((12, 20), (6, 10))])
def test_non_square_shapes_and_stride(bc, shape, strided):
    torch.manual_seed(5)
    u = torch.randn(2, 3, *shape, dtype=torch.float64)
    layers = [DifferentialConv2d(3, 4, bc=bc), DifferentialConv2d(3, 4, order=2, bc=bc, stride=2, out_channels=7),
              DifferentialConv2d(3, 2, bc=bc, mix=False)]
    for layer, out_shape in zip(layers, [(2, 3, *shape), (2, 7, *strided), (2, 6, *shape)]):
        layer = layer.double()
        out = layer(u)
        assert out.shape == out_shape
        # the value: boundary.convolve (pad by the bc, grouped conv) and then the 1×1 (float64: 1e-12)
        expected = boundary.convolve(u, layer.kernel, bc, stride=layer.stride, groups=3)
        if layer.pointwise is not None:
            expected = F.conv2d(expected, layer.pointwise.weight)
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_boundary_condition_matches_boundary_convolve():
    torch.manual_seed(6)
    layer = DifferentialConv2d(3, 2, bc="neumann", mix=False, stride=2)
    u = torch.randn(1, 3, 5, 8)
    expected = boundary.convolve(u, layer.weight, "neumann", stride=2, groups=3)
    assert torch.allclose(layer(u), expected)
    assert not torch.allclose(DifferentialConv2d(3, 2, mix=False, stride=2).requires_grad_(False)(u), expected)


def test_operators_read_back_a_known_stencil():
    layer = DifferentialConv2d(2, 3, mix=False)
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[4, 0] = S.sobel_x()  # channel 1, kernel 1: 8·∂x + 2·∂x∂y² (order 3, left out)
        layer.weight[2, 0] = S.gaussian()  # channel 0, kernel 2: 1 + ¼∂x² + ¼∂y² + ...
    ops = layer.operators()
    assert list(ops) == NAMES and all(v.shape == (2, 3) for v in ops.values())
    expected = {name: torch.zeros(2, 3) for name in NAMES}
    expected["∂x"][1, 1] = 8.0
    expected["1"][0, 2] = 1.0
    expected["∂x²"][0, 2] = expected["∂y²"][0, 2] = 0.25
    for name in NAMES:
        assert torch.allclose(ops[name], expected[name], atol=1e-6), name


def test_operators_of_a_constrained_layer_are_its_coefficients_and_its_moments():
    torch.manual_seed(7)
    layer = DifferentialConv2d(2, 3, order=2)
    ops = layer.operators()
    assert list(ops) == NAMES
    M = S.moments(layer.kernel[:, 0].detach())
    for n, (a, b) in enumerate(S.multi_indices(2)):  # the coefficients are the kernel's own moments
        assert torch.allclose(M[:, a, b].reshape(2, 3), ops[NAMES[n]], atol=1e-6)
    ops["∂x∂y"].sum().backward()
    assert layer.coefficients.grad[:, 4].eq(1).all() and layer.coefficients.grad[:, :4].eq(0).all()


def test_state_dict_keys_and_repr():
    assert sorted(DifferentialConv2d(2, 4).state_dict()) == ["pointwise.weight", "weight"]
    assert sorted(DifferentialConv2d(2, 4, order=2).state_dict()) == ["coefficients", "pointwise.weight"]
    text = repr(DifferentialConv2d(2, 4, order=2, bc="neumann", stride=2))
    assert "2, multiplier=4, order=2, bc='neumann', stride=2" in text and "pointwise" in text


def test_user_errors():
    with pytest.raises(ValueError, match="valid ones"):
        DifferentialConv2d(2, bc="reflect")
    with pytest.raises(ValueError, match="order must be"):
        DifferentialConv2d(2, order=5)
    with pytest.raises(ValueError, match="needs mix=True"):
        DifferentialConv2d(2, mix=False, out_channels=3)
    with pytest.raises(ValueError, match="must be ≥ 1"):
        DifferentialConv2d(2, 0)


# ----------------------------------------------------------------------------------- the CPU fast paths


def _grads(layer: DifferentialConv2d, u: torch.Tensor, forward):
    layer.zero_grad(set_to_none=True)
    u = u.detach().clone().requires_grad_()
    out = forward(u)
    out.backward(_cotangent(out))
    return out, u.grad, [p.grad for p in layer.parameters()]


def _cotangent(out: torch.Tensor) -> torch.Tensor:
    return torch.linspace(-1, 1, out.numel()).reshape(out.shape).to(out)


def _reference(layer: DifferentialConv2d):
    """The layer as plain autograd ops on whatever memory format its input has: grouped conv2d, then 1×1."""
    return lambda u: layer.pointwise(
        F.conv2d(boundary.pad(u, 1, layer.bc), layer.kernel, stride=layer.stride, groups=layer.channels)
    )


def _absolute_sums(layer: DifferentialConv2d, u: torch.Tensor):
    """Σ|products| behind the output and each gradient: the same linear maps on absolute values (see tolerance)."""
    ua = u.detach().abs().requires_grad_()
    kernel = layer.kernel.detach().abs().requires_grad_()
    pointwise = layer.pointwise.weight.detach().abs().requires_grad_()
    padded = boundary.pad(ua, 1, layer.bc)
    out = F.conv2d(F.conv2d(padded, kernel, stride=layer.stride, groups=layer.channels), pointwise)
    out.backward(_cotangent(out).abs())
    params = [kernel.grad]
    if layer.order is not None:  # coefficients[i, n] = Σ_pq basis[n, p, q] · kernel-gradient[i, p, q]
        params = [torch.einsum("npq,ipq->in", layer.basis.abs(), kernel.grad[:, 0])]
    return out, ua.grad, params + [pointwise.grad]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("bc, order, stride", [("dirichlet", None, 1), ("neumann", 2, 1), ("periodic", None, 2)])
def test_every_path_equals_the_plain_grouped_conv(channels_last, path, bc, order, stride):
    torch.manual_seed(9)
    layer = DifferentialConv2d(4, 3, order=order, bc=bc, out_channels=5, stride=stride)
    if path not in layer.available_paths():
        pytest.skip(f"{path} does not apply at stride {stride}")
    C, N, (H, W), m, c_out = 4, 2, (5, 8), 3, 5
    u = torch.randn(N, C, H, W)
    if channels_last:
        u = u.contiguous(memory_format=torch.channels_last)
    expected = _grads(layer, u, _reference(layer))
    layer.set_path(path)
    got = _grads(layer, u, layer)
    # The same products in another order (memory format, repeated channels, the folded dense weight, this CPU's
    # kernels): equal up to the rounding of the sums each value is made of. Reduction lengths, chained, the
    # longest of the paths: output 9·C (dense) + m (fold or 1×1); grad u 9·c_out + 9·m; grad kernel c_out +
    # N·H·W (+ 9 into the coefficients); grad 1×1 9 + N·H·W.
    bounds = _absolute_sums(layer, u)
    assert_same_sums(got[0], expected[0], terms=9 * C + m, scale=bounds[0], msg="output")
    assert_same_sums(got[1], expected[1], terms=9 * (c_out + m), scale=bounds[1], msg="grad u")
    depthwise_terms = c_out + N * H * W + (0 if order is None else 9)
    assert_same_sums(got[2][0], expected[2][0], terms=depthwise_terms, scale=bounds[2][0], msg="grad depthwise")
    assert_same_sums(got[2][1], expected[2][1], terms=9 + N * H * W, scale=bounds[2][1], msg="grad 1×1")


def test_the_tolerance_catches_a_small_kernel_change():  # so that the test above can fail
    torch.manual_seed(9)
    layer = DifferentialConv2d(4, 3, out_channels=5)
    u = torch.randn(2, 4, 5, 8)
    expected = _reference(layer)(u)
    with torch.no_grad():
        layer.weight[0, 0, 1, 1] *= 1 + 1e-4
    bound = _absolute_sums(layer, u)[0]
    with pytest.raises(AssertionError):
        assert_same_sums(layer(u), expected, terms=9 * 4 + 3, scale=bound)


def test_folded_weight_is_the_dense_operator_and_its_moments_the_operator_matrix():
    torch.manual_seed(12)
    layer = DifferentialConv2d(3, 4, out_channels=5).double()
    W = layer.folded_weight()
    assert W.shape == (5, 3, 3, 3)
    u = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(F.conv2d(u, W, padding=1), _reference(layer)(u), rtol=1e-12, atol=1e-12)
    # entry by entry: W[o, c] = Σ_j P[o, 4c + j]·K[4c + j]
    P, K = layer.pointwise.weight[:, :, 0, 0], layer.weight[:, 0]
    for o, c in [(0, 0), (4, 2), (2, 1)]:
        torch.testing.assert_close(W[o, c], sum(P[o, 4 * c + j] * K[4 * c + j] for j in range(4)))
    with pytest.raises(ValueError, match="needs the 1×1"):
        DifferentialConv2d(3, 4, mix=False).folded_weight()


def test_repeated_channel_path_keeps_no_m_fold_copy_and_follows_autocast():
    torch.manual_seed(10)
    layer = DifferentialConv2d(4, 4, mix=False)
    layer.set_path("repeated")
    u = torch.randn(2, 4, 6, 6, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        layer(u)
        assert saved == [u.shape, layer.weight.shape]  # u and the kernel, not the (2, 16, 6, 6) repeat
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(u)
        out.float().sum().backward()
    assert out.dtype == torch.bfloat16 and u.grad.dtype == torch.float32
    torch.testing.assert_close(out.float(), layer(u), atol=0.05, rtol=0.05)


@pytest.mark.parametrize("path", PATHS)
def test_every_path_passes_gradcheck(path):
    # float64 finite differences against each path's backward, to the input and every parameter
    torch.manual_seed(11)
    layer = DifferentialConv2d(2, 3, order=2, out_channels=2, bc="neumann").double()
    layer.set_path(path)
    u = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in layer.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in layer.parameters())
    forward = lambda x, *ps: torch.func.functional_call(layer, dict(zip(names, ps)), (x,))  # noqa: E731
    assert torch.autograd.gradcheck(forward, (u, *params))


def test_a_path_that_does_not_apply_is_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"path 'folded' does not apply .*valid ones: reference, channels_last, "
                       r"repeated \(folded needs the 1×1"):
        DifferentialConv2d(4, 4, mix=False).set_path("folded")
    with pytest.raises(ValueError, match="valid ones: reference, channels_last, folded"):
        DifferentialConv2d(4, 4, stride=2).set_path("repeated")
    with pytest.raises(ValueError, match="unknown path 'fast'"):
        depthwise_conv(torch.zeros(1, 2, 3, 3), torch.zeros(4, 1, 3, 3), groups=2, path="fast")


def test_compile_and_autocast_take_a_path_too():
    from pdeconv import autotune

    torch.manual_seed(13)
    layer = DifferentialConv2d(4, 4, out_channels=4)
    u = torch.randn(8, 4, 6, 6)
    eager = layer(u)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    # a compiled graph runs the cached path or the reference one: the same sums, maybe in another order
    bound = _absolute_sums(layer, u)[0]
    assert_same_sums(compiled(u), eager, terms=9 * 4 + 4, scale=bound)
    with torch.autocast("cpu", dtype=torch.bfloat16), autotune.using("measure"):  # autotuning, opted into
        low = layer(u)
    assert low.dtype == torch.bfloat16
    # bf16 rounds inputs and weights (2^-9 relative each) and the sums: a few hundredths of the scale
    torch.testing.assert_close(low.float(), eager, rtol=0, atol=float(0.02 * bound.detach().max()))
    assert any(key.startswith("DifferentialConv2d|") and "|bfloat16|" in key for key in autotune.chosen())


def test_unbatched_input_is_taken_as_nn_conv2d_takes_it_and_wrong_shapes_are_named():
    from pdeconv.layers import QuasiLinear, SymmetricHyperbolic2d, VariableCoefficients

    torch.manual_seed(21)
    u = torch.randn(4, 6, 5)  # (C, H, W), non-square so that a transposition would show
    layers = (DifferentialConv2d(4, 2, bc="neumann"), QuasiLinear(4, 2), VariableCoefficients(4, init="default"),
              SymmetricHyperbolic2d(4))
    for layer in layers:
        reference = nn.Conv2d(4, 4, 3, padding=1)(u)  # what the layer stands in for: unbatched in, unbatched out
        out = layer(u)
        assert out.shape == reference.shape == (4, 6, 5), type(layer).__name__
        # the same sample as a batch of one: the same key, so the same path and the same sums (rounding only)
        torch.testing.assert_close(out, layer(u[None])[0], rtol=1e-6, atol=1e-6)
        name = type(layer).__name__
        with pytest.raises(ValueError, match=rf"{name}: expected input of shape \(N, C, H, W\) or \(C, H, W\), "
                                             r"got \(6, 5\)"):
            layer(u[0])
        with pytest.raises(ValueError, match=rf"{name}\(4, ...\): expected 4 channels .*got input of shape "
                                             r"\(2, 3, 6, 5\)"):
            layer(torch.randn(2, 3, 6, 5))



def test_a_library_user_gets_the_reference_path_and_nothing_measured_until_autotuning_is_enabled(monkeypatch):
    """Autotuning is off by default, like cudnn.benchmark: a layer in one's own code measures nothing; a training
    loop opts in (engine.train calls autotune.enable), and the environment can pin the mode for the process."""
    from pdeconv import autotune

    layer = DifferentialConv2d(4, 4, out_channels=4)
    u = torch.randn(2, 4, 6, 6)
    monkeypatch.setattr(autotune, "_MODE", "reference")
    monkeypatch.setattr(autotune, "_FROM_ENVIRONMENT", None)
    before = autotune.chosen()
    layer(u)
    assert autotune.chosen() == before and autotune.mode() == "reference"
    autotune.enable()
    assert autotune.mode() == "measure"
    monkeypatch.setattr(autotune, "_FROM_ENVIRONMENT", "reference")  # PDECONV_AUTOTUNE=reference
    autotune.set_mode("reference")
    autotune.enable()
    assert autotune.mode() == "reference"


def test_a_layer_keeps_its_path_table_and_still_pickles():
    import copy
    import io
    import pickle

    layer = DifferentialConv2d(4, 4, out_channels=4)
    u = torch.randn(2, 4, 6, 6)
    expected = layer(u)
    table = layer._path_table()
    assert layer._path_table() is table  # built once, not per call
    layer.bc = "neumann"
    assert layer._path_table() is not table  # rebuilt for another boundary condition (padding 0 after the pad)
    layer.bc = "dirichlet"
    again = pickle.loads(pickle.dumps(layer))  # the closures are not pickled; rebuilt on first use
    torch.testing.assert_close(again(u), expected)
    torch.testing.assert_close(copy.deepcopy(layer)(u), expected)
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    assert "_paths" not in layer.state_dict()
