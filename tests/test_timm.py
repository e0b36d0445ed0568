"""The pde_* models as timm models: configs, features, intermediates, scripting, FX and timm's training pipeline.

The checks of timm's own model test suite that apply to a ResNet-like model, swept over every registered model
(tiny inputs keep it fast), then the variants, then timm's train.py pipeline end to end on a generated
ImageFolder tree.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

timm = pytest.importorskip("timm")

import pdeconv.models as M  # noqa: E402  (after the importorskip: these tests need timm)

NAMES = M.list_models()
SMALL = {"pde_resnet20", "pde_resnet32", "pde_resnet56", "pde_resnet18_small"}
SCRIPTABLE = ["baseline", "neumann", "periodic", "hyperbolic"]  # README: the other variants do not script


def _size(model) -> tuple[int, int, int]:
    """The config's input size, the ImageNet family's shrunk to 64² (as timm's tests shrink large inputs)."""
    c, h, w = model.pretrained_cfg["input_size"]
    return (c, min(h, 64), min(w, 64))


@pytest.mark.parametrize("name", NAMES)
def test_configs_say_what_the_model_takes(name):
    model = timm.create_model(name)
    cfg = model.pretrained_cfg
    assert model.default_cfg is cfg and cfg["num_classes"] == model.num_classes
    state = model.state_dict()
    assert cfg["first_conv"] + ".weight" in state and cfg["classifier"] + ".weight" in state
    c, h, w = cfg["input_size"]
    reduction = model.feature_info[-1]["reduction"]
    assert cfg["pool_size"] == (h // reduction, w // reduction) and len(cfg["mean"]) == len(cfg["std"]) == c
    assert (h, cfg["num_classes"]) == ((32, 10) if name in SMALL else (224, 1000))
    with torch.no_grad():  # forward_features at the config's size ends at pool_size (small family only: cheap)
        if name in SMALL:
            assert model.eval().forward_features(torch.randn(1, *cfg["input_size"])).shape[-2:] == cfg["pool_size"]
    gray = timm.create_model(name, in_chans=1)
    data = timm.data.resolve_data_config(model=gray)
    assert data["input_size"][0] == 1 and len(data["mean"]) == len(data["std"]) == 1
    if name in SMALL:  # one channel: Fashion-MNIST's size and statistics
        assert data["input_size"] == (1, 28, 28) and data["mean"] == (0.2860,)
    assert f"{name}.seed" in timm.list_models("pde_*", include_tags=True)


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_and_classifier_resets(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=42).train()
    size = _size(model)
    out = model(torch.randn(2, *size))
    out.mean().backward()
    assert out.shape == (2, 42) and torch.isfinite(out).all()
    assert all(p.grad is not None for p in model.parameters())  # every parameter takes part
    model.eval()
    x = torch.randn(1, *size)
    with torch.no_grad():
        r = model.feature_info[-1]["reduction"]
        features = model.forward_features(x)
        assert features.shape[-3:] == (model.num_features, size[1] // r, size[2] // r)
        pre_logits = model.forward_head(features, pre_logits=True)  # timm's contract: head_hidden_size wide
        assert pre_logits.shape == (1, model.head_hidden_size) and model.head_hidden_size == model.num_features
        model.reset_classifier(0)
        assert model.num_classes == 0 and model(x).shape == (1, model.head_hidden_size)
        model.reset_classifier(0, "")
        assert model(x).dim() == 4
    assert model.get_classifier(name_only=True) == "fc"


@pytest.mark.parametrize("name", NAMES)
def test_features_only_and_forward_intermediates_agree_with_feature_info(name):
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    features = timm.create_model(name, features_only=True).eval()
    features.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("fc.")})
    info = model.feature_info
    assert features.feature_info.channels() == [i["num_chs"] for i in info]
    assert features.feature_info.reduction() == [i["reduction"] for i in info]
    size = _size(model)
    x = torch.randn(1, *size)
    with torch.no_grad():
        maps = features(x)
        final, intermediates = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))  # the same modules in the same order
    assert len(maps) == len(intermediates) == len(info) >= 4
    for level, a, b in zip(info, maps, intermediates):
        assert a.shape[1] == level["num_chs"] and a.shape[-1] == math.ceil(size[-1] / level["reduction"])
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # one process, the same kernels: the same numbers
    last_two = timm.create_model(name, features_only=True, out_indices=(-2, -1))
    assert last_two.feature_info.channels() == [i["num_chs"] for i in info[-2:]]
    with torch.no_grad():
        assert len(model.forward_intermediates(x, indices=2, intermediates_only=True)) == 2
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(x, indices=[len(info)])
    with pytest.raises((IndexError, AssertionError, ValueError)):  # timm's own error for out_indices
        timm.create_model(name, features_only=True, out_indices=(len(info),))


def test_prune_and_grad_checkpointing():
    torch.manual_seed(0)
    model = timm.create_model("pde_resnet20", num_classes=5)
    x = torch.randn(4, 3, 32, 32)
    plain = model(x)
    plain.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing()
    again = model(x)  # recomputed in the backward pass: the same function, the same gradients
    again.sum().backward()
    torch.testing.assert_close(again, plain, rtol=1e-5, atol=1e-6)
    for p, g in zip(model.parameters(), grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)
    assert model.group_matcher()["blocks"] == r"^layer(\d+)\.(\d+)"
    kept = model.prune_intermediate_layers(indices=2)
    assert kept == [2, 3] and model.num_classes == 0
    pruned = timm.create_model("pde_resnet20")
    assert pruned.prune_intermediate_layers(indices=[1]) == [1] and pruned.num_features == 16
    assert pruned.head_hidden_size == 16 and pruned.eval()(x).shape[1] == 16  # ends after layer1


@pytest.mark.parametrize("variant", sorted(M.VARIANTS))
def test_variants_trace_with_fx_and_script_where_the_readme_says(variant):
    from timm.models._features_fx import get_notrace_functions, get_notrace_modules
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    torch.manual_seed(0)
    model = timm.create_model(f"pde_resnet20.{variant}").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions())
        _, nodes = get_graph_node_names(model, tracer_kwargs=kwargs)
        traced = create_feature_extractor(model, return_nodes=[nodes[-1]], tracer_kwargs=kwargs)
        torch.testing.assert_close(next(iter(traced(x).values())), expected, rtol=0, atol=0)  # the same calls
        torch.manual_seed(0)  # the same initial weights as `model`
        fx_features = timm.create_model(f"pde_resnet20.{variant}", features_only=True,  # every timm's spelling
                                        feature_cfg={"feature_cls": "fx"}).eval()
        _, intermediates = model.forward_intermediates(x)
        for a, b in zip(fx_features(x), intermediates, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script's deprecation warning
        if variant in SCRIPTABLE:
            with torch.no_grad():
                torch.testing.assert_close(torch.jit.script(model)(x), expected, rtol=1e-5, atol=1e-5)
                # the FX-traced graph scripts too (timm's test_model_forward_fx_torchscript): its code carries
                # forward's annotations, which must be classes TorchScript resolves, not strings
                scripted = torch.jit.script(traced)
                torch.testing.assert_close(next(iter(scripted(x).values())), expected, rtol=1e-5, atol=1e-5)
        else:
            with pytest.raises(Exception):  # noqa: B017  (TorchScript's errors have no common class)
                torch.jit.script(model)


def test_variants_are_tags_and_bad_requests_say_what_to_do():
    assert timm.create_model("pde_resnet20.seed").variant.name == "seed"
    assert timm.create_model("pde_resnet20", variant="seed").pretrained_cfg["tag"] == "seed"
    compound = timm.create_model("pde_resnet20", variant="seed+neumann", bc="periodic")
    assert compound.pretrained_cfg["tag"] == "seed+neumann" and compound.variant.bc == "periodic"
    with pytest.raises(ValueError, match="unknown tag 'nope'.*baseline, neumann"):
        timm.create_model("pde_resnet20.nope")
    with pytest.raises(ValueError, match="disagree"):
        timm.create_model("pde_resnet20.seed", variant="dw4")
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("pde_resnet20", pretrained=True)
    with pytest.raises(ValueError, match="drop_path_rate is not implemented"):
        timm.create_model("pde_resnet20", drop_path_rate=0.1)
    model = timm.create_model("pde_resnet20", drop_rate=0.5, global_pool="max", drop_path_rate=None)
    assert model.drop_rate == 0.5 and isinstance(model.avgpool, nn.AdaptiveMaxPool2d)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert not torch.equal(model.train()(x), model(x))  # dropout in training
        assert torch.equal(model.eval()(x), model(x))


@pytest.mark.parametrize("name,variant", [("pde_resnet20", "seed"), ("pde_resnet18", "neumann"),
                                          ("pde_resnet50", "varcoef")])
def test_timm_and_pdeconv_build_the_same_model(name, variant):
    torch.manual_seed(0)
    ours = M.create(name, variant=variant).eval()
    theirs = timm.create_model(name, variant=variant).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        # the same modules and weights; pdeconv's measured paths may differ between two instances' first calls
        torch.testing.assert_close(theirs(x), ours(x), rtol=1e-4, atol=1e-5)


def test_timm_training_pipeline_and_checkpoints_both_ways(tmp_path, make_fashion_mnist):
    """What timm's train.py does, on a generated ImageFolder tree; pdeconv and timm checkpoints interchange."""
    from PIL import Image
    from timm.data import create_dataset, create_loader, resolve_data_config
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from timm.utils import accuracy

    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 16), ("validation", 8)):
        for label in range(2):
            folder = tmp_path / "tree" / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(n):
                image = torch.rand(32, 32, 3, generator=g) * 0.3
                image[:, :, label] += 0.6  # class 0 reddish, class 1 greenish
                Image.fromarray((255 * image).to(torch.uint8).numpy()).save(folder / f"{i}.png")
    torch.manual_seed(0)
    model = timm.create_model("pde_resnet20.seed", num_classes=2)
    config = resolve_data_config(model=model)
    loaders = {}
    for split, training in (("train", True), ("validation", False)):
        dataset = create_dataset("", root=str(tmp_path / "tree"), split=split, is_training=training)
        loaders[split] = create_loader(dataset, input_size=config["input_size"], batch_size=8, is_training=training,
                                       mean=config["mean"], std=config["std"], crop_pct=config["crop_pct"],
                                       num_workers=0, persistent_workers=False,  # older timm asks for
                                       use_prefetcher=False, device=torch.device("cpu"))  # them even with 0 workers
    optimizer = create_optimizer_v2(model, opt="sgd", lr=0.05, momentum=0.9, weight_decay=1e-4)
    scheduler, epochs = create_scheduler_v2(optimizer, sched="cosine", num_epochs=1,
                                            updates_per_epoch=len(loaders["train"]))
    model.train()
    for step, (x, y) in enumerate(loaders["train"]):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step_update(num_updates=step + 1)
        assert torch.isfinite(loss)
    scheduler.step(1)
    model.eval()
    with torch.no_grad():
        top1 = [accuracy(model(x), y, topk=(1,))[0] for x, y in loaders["validation"]]
    assert epochs == 1 and 0 <= float(sum(top1) / len(top1)) <= 100

    # a pdeconv training run's checkpoint loads into the timm-built model, and timm's weights into pdeconv's
    from pdeconv import engine, run

    data = make_fashion_mnist(tmp_path / "fm", 32, 16)
    config = run.make_config(variant="seed", epochs=1, batch_size=16, data_dir=str(data), out=str(tmp_path / "r"),
                             progress=False, threads="1")
    run.train(config)
    state = engine.load_checkpoint(tmp_path / "r" / engine.CHECKPOINT)["model"]
    timm.create_model("pde_resnet20.seed", in_chans=1).load_state_dict(state, strict=True)
    path = tmp_path / "timm_weights.pth"
    torch.save(model.state_dict(), path)
    from pdeconv.analysis import load_model

    loaded = load_model("pde_resnet20", variant="seed", num_classes=2, weights=path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


def test_timm_script_runs_a_timm_script_with_the_models_registered(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "train.py"
    script.write_text("import sys, timm\n"
                      "model = timm.create_model(sys.argv[2], num_classes=int(sys.argv[4]))\n"
                      "print(sys.argv[1:], type(model).__name__, model.variant.name, model.num_classes)\n")
    wrapper = [sys.executable, "-m", "pdeconv.timm_script"]
    done = subprocess.run([*wrapper, str(script), "/data", "pde_resnet20.seed", "--num-classes", "7"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['/data', 'pde_resnet20.seed', '--num-classes', '7'] CifarResNet seed 7"
    missing = subprocess.run([*wrapper, str(tmp_path / "nope.py")], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "give the path of timm's train.py" in missing.stderr


def test_a_timm_older_than_the_tested_range_is_refused_saying_what_to_do(monkeypatch, tmp_path, capsys):
    import subprocess
    import sys

    from pdeconv import timm_script
    from pdeconv.models import registry

    assert registry.timm_too_old() is None  # the installed timm (the control)
    for version in ("0.9.0", "1.0.29.dev0", "10.0"):
        monkeypatch.setattr(timm, "__version__", version)
        assert registry.timm_too_old() is None
    monkeypatch.setattr(timm, "__version__", "0.6.13")
    assert "timm 0.6.13 is older than 0.9.0" in registry.timm_too_old()
    with pytest.raises(ImportError, match=r"pip install -U 'timm>=0\.9\.0'"):
        M.register_timm()
    script = tmp_path / "train.py"
    script.write_text("raise SystemExit('the script ran')\n")
    with pytest.raises(SystemExit) as stop:
        timm_script.main([str(script)])
    assert stop.value.code == 2 and "timm 0.6.13 is older than 0.9.0" in capsys.readouterr().err
    # importing pdeconv.models with such a timm warns and registers nothing; the models still build
    code = ("import warnings, timm; timm.__version__ = '0.6.13'\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    import pdeconv.models as M\n"
            "print(timm.list_models('pde_*'), M.create('pde_resnet20').num_classes)\n"
            "print([str(w.message) for w in caught if 'pde_' in str(w.message)])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    listed, warned = done.stdout.strip().splitlines()
    assert listed == "[] 10" and "not registered with timm" in warned and "timm>=0.9.0" in warned
