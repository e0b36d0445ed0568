"""pdeconv.paths: the fastest exact path, measured at first use, cached, recorded and restorable."""

from __future__ import annotations

import time

import pytest
import torch

from pdeconv import paths
from pdeconv.layers import DifferentialConv2d


@pytest.fixture(autouse=True)
def fresh_choices():
    saved, mode = paths.chosen(), paths.mode()
    paths.clear()
    paths.set_mode("measure")
    yield
    paths.clear()
    paths.restore(saved)
    paths.set_mode(mode)


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
    assert paths.choose("toy", (1,), _candidates(calls), [x], reference="slow") == "fast"
    measured = dict(calls)
    assert measured["slow"] >= 2 and measured["fast"] >= 2  # each candidate ran (warm-up + repeats)
    assert paths.choose("toy", (1,), _candidates(calls), [x], reference="slow") == "fast"
    assert calls == measured  # cached: no second measurement
    (key, choice), = paths.chosen().items()
    assert choice == "fast" and key.startswith("toy|1|2x3x4x5|float32|cpu|contiguous|train")
    # another shape, dtype, grad mode or memory format is another key, measured again
    with torch.no_grad():
        paths.choose("toy", (1,), _candidates(calls), [x], reference="slow")
    paths.choose("toy", (1,), _candidates(calls), [x.double()], reference="slow")
    paths.choose("toy", (1,), _candidates(calls), [x.contiguous(memory_format=torch.channels_last)], reference="slow")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        paths.choose("toy", (1,), _candidates(calls), [x], reference="slow")
    assert len(paths.chosen()) == 5 and any("|eval" in k for k in paths.chosen())
    assert any("|bfloat16|" in k for k in paths.chosen()) and any("|channels_last|" in k for k in paths.chosen())


def test_modes_restore_and_the_reference_path():
    calls = {"slow": 0, "fast": 0}
    x = torch.ones(2, 3)
    with paths.using("reference"):
        assert paths.choose("toy", (), _candidates(calls), [x], reference="slow") == "slow"
    with paths.using("fast"):
        assert paths.choose("toy", (), _candidates(calls), [x], reference="slow") == "fast"
    with paths.using("folded"):  # a forced path the layer does not have: its reference
        assert paths.choose("toy", (), _candidates(calls), [x], reference="slow") == "slow"
    assert calls == {"slow": 0, "fast": 0} and paths.mode() == "measure"
    paths.restore({paths._key("toy", (), [x], False): "slow"})
    assert paths.choose("toy", (), _candidates(calls), [x], reference="slow") == "slow"  # restored, not measured
    assert calls == {"slow": 0, "fast": 0}
    with pytest.raises(ValueError, match="reference path 'none' is not among"):
        paths.choose("toy", (), _candidates(calls), [x], reference="none")
    with pytest.raises(ValueError, match="path mode must be"):
        paths.set_mode("")


def test_measuring_a_layer_leaves_no_trace_but_the_choice():
    torch.manual_seed(0)
    layer = DifferentialConv2d(4, 4, out_channels=4)
    u = torch.randn(8, 4, 6, 6, requires_grad=True)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    out = layer(u)
    (key, choice), = paths.chosen().items()
    assert key.startswith("DifferentialConv2d|4|4|4|1|dirichlet|8x4x6x6|") and choice in layer.available_paths()
    assert all(p.grad is None for p in layer.parameters()) and u.grad is None  # the candidates' gradients vanished
    assert all(torch.equal(v, before[k]) for k, v in layer.state_dict().items())
    assert list(layer.state_dict()) == ["weight", "pointwise.weight"]
    layer.set_path(choice)
    assert torch.equal(layer(u), out)  # the measured call used the chosen path
