"""pdeconv.autotune: the fastest exact path, measured at first use, cached, recorded and restorable."""

from __future__ import annotations

import time

import pytest
import torch

from pdeconv import autotune
from pdeconv.layers import DifferentialConv2d


@pytest.fixture(autouse=True)
def fresh_choices():
    saved, mode = autotune.chosen(), autotune.mode()
    autotune.clear()
    autotune.set_mode("measure")
    yield
    autotune.clear()
    autotune.restore(saved)
    autotune.set_mode(mode)


def _candidates(calls: dict[str, int]):
    def slow(x):
        calls["slow"] += 1
        time.sleep(0.004)
        return x * 2

    def fast(x):
        calls["fast"] += 1
        return x + x

    return {"slow": slow, "fast": fast}


def test_the_fastest_candidate_is_chosen_once_per_key():
    calls = {"slow": 0, "fast": 0}
    x = torch.ones(2, 3, 4, 5, requires_grad=True)
    assert autotune.choose("toy", (1,), _candidates(calls), [x], reference="slow") == "fast"
    measured = dict(calls)
    assert measured["slow"] >= 2 and measured["fast"] >= 2  # each candidate ran (warm-up + repeats)
    assert autotune.choose("toy", (1,), _candidates(calls), [x], reference="slow") == "fast"
    assert calls == measured  # cached: no second measurement
    (key, choice), = autotune.chosen().items()
    assert choice == "fast" and key.startswith("toy|1|2x3x4x5|float32|cpu|contiguous|train")
    # another shape, dtype, grad mode or memory format is another key, measured again
    with torch.no_grad():
        autotune.choose("toy", (1,), _candidates(calls), [x], reference="slow")
    autotune.choose("toy", (1,), _candidates(calls), [x.double()], reference="slow")
    channels_last = x.contiguous(memory_format=torch.channels_last)
    autotune.choose("toy", (1,), _candidates(calls), [channels_last], reference="slow")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autotune.choose("toy", (1,), _candidates(calls), [x], reference="slow")
    assert len(autotune.chosen()) == 5 and any("|eval" in k for k in autotune.chosen())
    assert any("|bfloat16|" in k for k in autotune.chosen()) and any("|channels_last|" in k for k in autotune.chosen())


def test_modes_restore_and_the_reference_path():
    calls = {"slow": 0, "fast": 0}
    x = torch.ones(2, 3)
    with autotune.using("reference"):
        assert autotune.choose("toy", (), _candidates(calls), [x], reference="slow") == "slow"
    with autotune.using("fast"):
        assert autotune.choose("toy", (), _candidates(calls), [x], reference="slow") == "fast"
    with autotune.using("folded"):  # a forced path the layer does not have: its reference
        assert autotune.choose("toy", (), _candidates(calls), [x], reference="slow") == "slow"
    assert calls == {"slow": 0, "fast": 0} and autotune.mode() == "measure"
    autotune.restore({autotune._key("toy", (), [x], False): "slow"})
    assert autotune.choose("toy", (), _candidates(calls), [x], reference="slow") == "slow"  # restored, not measured
    assert calls == {"slow": 0, "fast": 0}
    with pytest.raises(ValueError, match="reference path 'none' is not among"):
        autotune.choose("toy", (), _candidates(calls), [x], reference="none")
    with pytest.raises(ValueError, match="path mode must be"):
        autotune.set_mode("")


def test_measuring_a_layer_leaves_no_trace_but_the_choice():
    torch.manual_seed(0)
    layer = DifferentialConv2d(4, 4, out_channels=4)
    u = torch.randn(8, 4, 6, 6, requires_grad=True)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    out = layer(u)
    (key, choice), = autotune.chosen().items()
    assert key.startswith("DifferentialConv2d|4|4|4|1|dirichlet|8x4x6x6|") and choice in layer.available_paths()
    assert all(p.grad is None for p in layer.parameters()) and u.grad is None  # the candidates' gradients vanished
    assert all(torch.equal(v, before[k]) for k, v in layer.state_dict().items())
    assert list(layer.state_dict()) == ["weight", "pointwise.weight"]
    layer.set_path(choice)
    assert torch.equal(layer(u), out)  # the measured call used the chosen path


def test_compiled_layers_take_the_eager_choice_at_any_size_even_with_dynamic_shapes():
    calls = {"slow": 0, "fast": 0}
    x = torch.ones(2, 3, 4, 5)

    def step(x):
        return autotune.choose("toy", (7,), _candidates(calls), [x], reference="slow")

    assert step(x) == "fast"  # measured in eager at 2×3×4×5
    measured = dict(calls)
    compiled = torch.compile(step, backend="eager", fullgraph=True, dynamic=True)
    assert compiled(torch.ones(3, 3, 6, 5)) == "fast"  # another (symbolic) size: the configuration's choice
    assert calls == measured  # nothing measured under compile
    autotune.clear()
    torch.compiler.reset()
    assert compiled(torch.ones(3, 3, 6, 5)) == "slow"  # nothing chosen yet: the reference


def test_differential_layer_compiles_with_dynamic_shapes():
    torch.manual_seed(0)
    layer = DifferentialConv2d(4, 4, out_channels=4).eval()
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True, dynamic=True)
    for size in (5, 7):
        u = torch.randn(2, 4, size, size + 1)
        with torch.no_grad():
            # first size: compiled takes the reference path (nothing measured yet), eager then measures and may
            # choose another; both exact, so they differ by the order of summation only
            torch.testing.assert_close(compiled(u), layer(u), rtol=1e-5, atol=1e-6)


def test_is_channels_last_names_the_memory_order():
    x = torch.zeros(2, 3, 4, 5)
    assert not autotune.is_channels_last(x)
    assert autotune.is_channels_last(x.contiguous(memory_format=torch.channels_last))
    assert not autotune.is_channels_last(torch.zeros(2, 1, 4, 5).contiguous(memory_format=torch.channels_last))  # both
    assert not autotune.is_channels_last(torch.zeros(3, 4, 5))  # not 4-D
    assert autotune.is_channels_last(x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2))  # NHWC memory by hand
