"""pdeconv.data: real on-disk formats, the search order, augmentation and sharding."""

from __future__ import annotations

import gzip
import pickle
import re

import numpy as np
import pytest
import torch

from pdeconv import data
from pdeconv.data import locate

_DOWNLOAD = locate._download  # the real one, for the test that runs it offline


@pytest.fixture(autouse=True)
def no_default_data(monkeypatch, tmp_path):
    """Tests see no real data: empty cache, no $PDECONV_DATA, no system folders, no downloads."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("PDECONV_DATA", raising=False)
    monkeypatch.setattr(locate, "SYSTEM_DIRS", {})

    def offline(name, root):
        raise OSError("no network in tests")

    monkeypatch.setattr(locate, "_download", offline)


def test_registry_and_unknown_name():
    assert data.dataset_info("fashion-mnist").num_classes == 10
    assert data.dataset_info("Fashion_MNIST").name == "fashion-mnist"
    assert data.dataset_info("cifar100").num_classes == 100
    with pytest.raises(ValueError, match="unknown dataset 'mnist3'; choose one of: cifar10, cifar100, fashion-mnist"):
        data.dataset_info("mnist3")


# ------------------------------------------------------------------------------------------ IDX / Fashion-MNIST


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_roundtrip(tmp_path, write_idx, gz):
    array = np.random.default_rng(0).integers(0, 256, (3, 5, 8), dtype=np.uint8)  # non-square on purpose
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, array)
    np.testing.assert_array_equal(data.read_idx(path), array)


def test_read_idx_rejects_bad_files(tmp_path, write_idx):
    (tmp_path / "magic").write_bytes(b"\x01\x02\x03\x04abcd")
    with pytest.raises(ValueError, match="magic.*not an IDX file"):
        data.read_idx(tmp_path / "magic")
    write_idx(tmp_path / "full", np.zeros((4, 6, 6), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "full").read_bytes()[:-7])
    with pytest.raises(ValueError, match="short.*header says"):
        data.read_idx(tmp_path / "short")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00\x00\x00\x09" + b"x" * 9)[:-10])
    with pytest.raises(ValueError, match="bad.gz"):
        data.read_idx(tmp_path / "bad.gz")


@pytest.mark.parametrize("layout", ["", "FashionMNIST/raw"])
@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_layouts_load_exactly(tmp_path, make_fashion_mnist, stripes, layout, gz):
    make_fashion_mnist(tmp_path / "root" / layout, 12, 7, gz=gz)
    train_x, train_y, test_x, test_y = data.load_tensors("fashion-mnist", tmp_path / "root")
    x, y = stripes(12, seed=0)
    assert train_x.dtype == torch.uint8 and train_x.shape == (12, 1, 28, 28) and test_x.shape == (7, 1, 28, 28)
    assert train_y.dtype == torch.int64
    np.testing.assert_array_equal(train_x[:, 0].numpy(), x)
    np.testing.assert_array_equal(train_y.numpy(), y)


def test_search_order(tmp_path, monkeypatch, make_fashion_mnist):
    explicit, env, cache, system = (
        make_fashion_mnist(tmp_path / d) for d in ("explicit", "env", "cache/pdeconv", "sys")
    )
    monkeypatch.setattr(locate, "SYSTEM_DIRS", {"fashion-mnist": (system,)})
    assert data.find_data("fashion-mnist", explicit) == explicit
    assert data.find_data("fashion-mnist") == cache
    monkeypatch.setenv("PDECONV_DATA", str(env))
    assert data.find_data("fashion-mnist") == env
    assert data.find_data("fashion-mnist", explicit) == explicit
    monkeypatch.delenv("PDECONV_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "nowhere"))
    assert data.find_data("fashion-mnist") == system
    # a folder the user names is where the data must be: no silent fall-back to another copy
    with pytest.raises(FileNotFoundError, match=r"data directory .*nowhere-dir does not exist; pass an existing"):
        data.find_data("fashion-mnist", tmp_path / "nowhere-dir")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"fashion-mnist not found \(looked in .*empty; download disabled"):
        data.find_data("fashion-mnist", tmp_path / "empty", download=False)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileNotFoundError, match="afile is a file, not a folder"):
        data.find_data("fashion-mnist", tmp_path / "afile")


def test_a_named_empty_folder_gets_the_download(tmp_path, monkeypatch, make_fashion_mnist):
    monkeypatch.setattr(locate, "_download", lambda name, root: make_fashion_mnist(root / "FashionMNIST" / "raw"))
    (tmp_path / "mine").mkdir()
    assert data.find_data("fashion-mnist", tmp_path / "mine") == tmp_path / "mine" / "FashionMNIST" / "raw"


def test_loaders_record_the_folder_and_a_fingerprint_of_what_they_read(tmp_path, make_fashion_mnist):
    import hashlib

    folder = make_fashion_mnist(tmp_path / "d", 16, 8)
    _, _, info = data.build_loaders("fashion-mnist", data_dir=folder, batch_size=4)
    files = [folder / f"{s}-{k}-ubyte.gz" for s in ("train", "t10k") for k in ("images-idx3", "labels-idx1")]
    assert info.source == str(folder)
    assert info.fingerprint == "sha256:" + hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()
    make_fashion_mnist(tmp_path / "d", 16, 8, seed=1)  # other data in the same place: another fingerprint
    assert data.build_loaders("fashion-mnist", data_dir=folder, batch_size=4)[2].fingerprint != info.fingerprint


def test_a_failed_real_download_says_why_and_leaves_no_empty_folders(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)  # torchvision's own download code runs, offline
    monkeypatch.setattr(locate, "_download", _DOWNLOAD)
    (tmp_path / "d").mkdir()
    with pytest.raises(FileNotFoundError) as info:
        data.find_data("fashion-mnist", tmp_path / "d")
    # torchvision's message spans lines and ends with the cause: all of it, on one line
    assert re.search("download failed: .*no network in tests", str(info.value))
    assert "\n" not in str(info.value)
    assert list((tmp_path / "d").iterdir()) == []  # no FashionMNIST/raw/ left behind in the user's folder


def test_missing_data_says_how_to_get_it(tmp_path):
    (tmp_path / "nothing").mkdir()
    with pytest.raises(FileNotFoundError) as info:
        data.load_tensors("fashion-mnist", tmp_path / "nothing")
    message = str(info.value)
    assert "\n" not in message
    assert "apt-get install dataset-fashion-mnist" in message and "pass `data_dir`, a folder" in message
    assert "internet" in message and "download failed: no network in tests" in message
    assert str(tmp_path / "nothing") in message
    assert list((tmp_path / "nothing").iterdir()) == []  # the folders the failed download made are gone again
    with pytest.raises(FileNotFoundError, match="download disabled"):
        data.find_data("cifar10", tmp_path, download=False)
    with pytest.raises(FileNotFoundError, match="imagefolder.*`data_dir`"):
        data.build_loaders("imagefolder")


def test_download_lands_in_cache(tmp_path, monkeypatch, make_fashion_mnist):
    """When nothing is found, the download goes to the cache and is then found there."""
    monkeypatch.setattr(locate, "_download", lambda name, root: make_fashion_mnist(root / "FashionMNIST" / "raw"))
    assert data.find_data("fashion-mnist") == tmp_path / "cache" / "pdeconv" / "FashionMNIST" / "raw"


# ------------------------------------------------------------------------------------------ CIFAR


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_batches_load_in_channel_plane_order(tmp_path, make_cifar, name):
    arrays = make_cifar(tmp_path, name, n_per_batch=4)
    train_x, train_y, test_x, test_y = data.load_tensors(name, tmp_path)
    n_train = 20 if name == "cifar10" else 4
    assert train_x.shape == (n_train, 3, 32, 32) and test_x.shape == (4, 3, 32, 32)
    test_data, test_labels = arrays["test_batch" if name == "cifar10" else "test"]
    # a row is 1024 red, 1024 green, 1024 blue values, each plane row-major (y, x)
    np.testing.assert_array_equal(test_x[2, 1].numpy(), test_data[2, 1024:2048].reshape(32, 32))
    assert test_y.tolist() == test_labels


class _Payload:
    """Unpickling this would create the marker file (a stand-in for arbitrary code)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_cifar_reader_refuses_code(tmp_path, make_cifar):
    make_cifar(tmp_path, "cifar10", n_per_batch=2)
    marker = tmp_path / "pwned"
    evil = tmp_path / "cifar-10-batches-py" / "test_batch"
    evil.write_bytes(pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": [_Payload(marker)]}, protocol=2))
    with pytest.raises(ValueError, match="test_batch.*not a CIFAR batch file.*refusing to load"):
        data.load_tensors("cifar10", tmp_path)
    assert not marker.exists()
    pickle.loads(evil.read_bytes())  # the control: a plain unpickler does run it
    assert marker.exists()


# ------------------------------------------------------------------------------------------ ImageFolder


def test_image_folder_loaders(tmp_path, make_image_folder):
    from PIL import Image

    # 24×16 (W×H) images and image_size 14: evaluation resizes the short side to round(14 / 0.875) = 16, the
    # size it already has (no resampling), then centre-crops 14×14: rows 1..14, columns 5..18 of the file
    make_image_folder(tmp_path / "tree", classes=("a", "b", "c"), per_class=2, size=(24, 16))
    train, test, info = data.build_loaders(
        "imagefolder", data_dir=tmp_path / "tree", batch_size=2, workers=0, image_size=14
    )
    assert info.num_classes == 3 and info.image_size == 14 and len(train) == 3
    mean, std = torch.tensor(info.mean).view(1, 3, 1, 1), torch.tensor(info.std).view(1, 3, 1, 1)
    x, y = next(iter(train))
    assert x.shape == (2, 3, 14, 14) and x.dtype == torch.float32 and y.dtype == torch.int64
    # normalised with the registry's mean and std: undone, the pixels are uint8 values / 255 (PIL crops and
    # resizes 8-bit images), so in [0, 1] and multiples of 1/255 up to float32 rounding (~1e-6 here)
    pixels = x * std + mean
    assert float(pixels.min()) >= -1e-5 and float(pixels.max()) <= 1 + 1e-5
    assert float((pixels * 255 - (pixels * 255).round()).abs().max()) < 1e-3
    test_x, test_y = (torch.cat(t) for t in zip(*test))
    assert test_y.tolist() == [0, 0, 1, 1, 2, 2]  # ImageFolder order: classes sorted, then file names
    files = sorted((tmp_path / "tree" / "val").glob("*/*.png"))
    source = torch.stack([torch.from_numpy(np.array(Image.open(f))).permute(2, 0, 1) for f in files]) / 255
    # no resampling, so only float32 rounding of the normalisation and its inverse: ≤ 1e-6 ≪ 1/255
    torch.testing.assert_close(test_x * std + mean, source[:, :, 1:15, 5:19], rtol=0, atol=1e-5)


def test_image_folder_augmentation_is_a_function_of_seed_epoch_and_item_only(tmp_path, make_image_folder):
    make_image_folder(tmp_path / "tree", per_class=4)

    def batches(torch_seed, epoch=3, workers=1, epochs_before=()):
        torch.manual_seed(torch_seed)  # the global RNG must not matter, with workers or without
        train, _, _ = data.build_loaders(
            "imagefolder", data_dir=tmp_path / "tree", batch_size=4, workers=workers, image_size=8, seed=5
        )
        for e in epochs_before:  # persistent workers: earlier epochs leave nothing behind
            train.set_epoch(e)
            list(train)
        train.set_epoch(epoch)
        return [x for x, _ in train]

    a = batches(0)
    assert all(torch.equal(p, q) for p, q in zip(a, batches(1)))
    assert all(torch.equal(p, q) for p, q in zip(a, batches(0, workers=0)))  # as many workers as you like
    assert all(torch.equal(p, q) for p, q in zip(a, batches(0, workers=2, epochs_before=(1, 2))))
    assert not all(torch.equal(p, q) for p, q in zip(a, batches(0, epoch=4)))
    # items seeded in the main process (no workers) put torch's random state back: dropout etc. are untouched
    train, _, _ = data.build_loaders("imagefolder", data_dir=tmp_path / "tree", batch_size=4, workers=0,
                                     image_size=8, seed=5)
    torch.manual_seed(7)
    before = torch.get_rng_state()
    list(train)
    assert torch.equal(torch.get_rng_state(), before)


# ------------------------------------------------------------------------------------------ augmentation


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    x = torch.randint(0, 256, (6, 2, 5, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))  # non-square
    out = data.random_crop(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    dy, dx = torch.randint(0, 5, (2, 6), generator=torch.Generator().manual_seed(0))  # the same draw
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for n in range(6):
        assert torch.equal(out[n], padded[n, :, dy[n] : dy[n] + 5, dx[n] : dx[n] + 8])
    assert torch.equal(data.random_crop(x, 0, torch.Generator()), x)


def test_random_flip_mirrors_about_the_vertical_axis():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.uint8).reshape(4 * 2, 3, 1, 5)
    out = data.random_flip(x, torch.Generator().manual_seed(1))
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x)]
    assert all(f or torch.equal(o, i) for f, o, i in zip(flipped, out, x))
    # the same draw: one uniform per image from the generator, flipped where it is below 1/2
    mask = (torch.rand(len(x), generator=torch.Generator().manual_seed(1)) < 0.5).tolist()
    assert flipped == mask and 0 < sum(mask) < len(x)  # images are not mirror-symmetric: a flip always shows
    assert torch.equal(out[flipped.index(True), 0, 0], x[flipped.index(True), 0, 0].flip(0))  # x → W−1−x


def _loader(shuffle, **kwargs):
    images = torch.arange(10, dtype=torch.uint8).repeat_interleave(4 * 6).reshape(10, 1, 4, 6)
    return data.TensorLoader(
        images, torch.arange(10), batch_size=3, mean=(0.0,), std=(1 / 255,), shuffle=shuffle, **kwargs
    )


def test_tensor_loader_is_a_function_of_seed_and_epoch():
    def epoch_batches(loader, epoch):
        loader.set_epoch(epoch)
        return [(x.clone(), y.clone()) for x, y in loader]

    a = epoch_batches(_loader(True, crop_padding=1, flip=True, seed=0), 2)
    b = epoch_batches(_loader(True, crop_padding=1, flip=True, seed=0), 2)
    c = epoch_batches(_loader(True, crop_padding=1, flip=True, seed=0), 3)
    assert len(a) == 3  # 10 images, batches of 3, the incomplete last one dropped
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not all(torch.equal(ya, yc) for (_, ya), (_, yc) in zip(a, c))
    x, y = a[0]
    assert x.dtype == torch.float32 and x.shape == (3, 1, 4, 6) and y.dtype == torch.int64
    # with std = 1/255 and mean 0 the normalised pixels are the original values: the label, or padding zeros
    label = y[:, None, None, None].float()
    assert bool(((x - label).abs() < 1e-4).logical_or(x.abs() < 1e-4).all())


def test_tensor_loader_shards_across_ranks():
    def labels(loader, epoch=1):
        loader.set_epoch(epoch)
        return torch.cat([y for _, y in loader]).tolist()

    evals = [labels(_loader(False, rank=r, world_size=3)) for r in range(3)]
    assert sorted(sum(evals, [])) == list(range(10))  # evaluation: every image exactly once
    trains = [labels(_loader(True, seed=4, rank=r, world_size=2)) for r in range(2)]
    assert len(trains[0]) == len(trains[1]) == 3  # 5 images per rank, one full batch of 3
    assert not set(trains[0]) & set(trains[1])  # a shared permutation split between ranks


def test_build_loaders_fashion_mnist(tmp_path, make_fashion_mnist, stripes):
    make_fashion_mnist(tmp_path, 40, 9)
    train, test, info = data.build_loaders("fashion-mnist", data_dir=tmp_path, batch_size=16, seed=1)
    assert (info.num_classes, info.in_chans, info.image_size) == (10, 1, 28)
    assert len(train) == 2 and len(test) == 1
    x, y = next(iter(train))
    assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32
    test_x = torch.cat([x for x, _ in test])
    raw = torch.from_numpy(stripes(9, seed=1)[0]).float()[:, None]
    torch.testing.assert_close(test_x, (raw / 255 - 0.2860) / 0.3530)  # eval: no augmentation
    with pytest.raises(ValueError, match="batch size 64 .* larger than the 40 training images"):
        data.build_loaders("fashion-mnist", data_dir=tmp_path, batch_size=64)


def test_train_subset_is_fixed_and_leaves_the_test_set_whole(tmp_path, make_fashion_mnist, make_image_folder):
    keep = data.subset_indices(50, 8)
    assert torch.equal(keep, data.subset_indices(50, 8)) and len(set(keep.tolist())) == 8
    assert keep.tolist() == sorted(keep.tolist()) and len(keep) == 8
    with pytest.warns(UserWarning, match="`train_subset` 8 is more than the 5 training images there are"):
        assert len(data.subset_indices(5, 8)) == 5
    make_fashion_mnist(tmp_path / "fm", 40, 9)
    train, test, _ = data.build_loaders("fashion-mnist", data_dir=tmp_path / "fm", batch_size=4, train_subset=8,
                                        seed=3)
    assert len(train) == 2 and len(test) == 3
    _, all_labels, _, _ = data.load_tensors("fashion-mnist", tmp_path / "fm")
    train.set_epoch(1)
    seen = torch.cat([y for _, y in train])
    assert sorted(seen.tolist()) == sorted(all_labels[data.subset_indices(40, 8)].tolist())
    make_image_folder(tmp_path / "tree", per_class=3)
    train, test, info = data.build_loaders("imagefolder", data_dir=tmp_path / "tree", batch_size=2, workers=0,
                                           image_size=8, train_subset=4)
    assert len(train) == 2 and info.num_classes == 2 and sum(len(y) for _, y in test) == 6
    with pytest.raises(ValueError, match="train_subset must be at least 1"):
        data.subset_indices(10, 0)


# ------------------------------------------------------------------------------------------ fashion-mnist-rts


def test_fashion_mnist_rts_is_built_once_and_its_draws_reproduce_it(tmp_path, make_fashion_mnist):
    from pdeconv.warp import similarity_warp

    source = make_fashion_mnist(tmp_path / "fmnist", 40, 12)
    folder = data.rts_folder(source)
    assert folder.parent == tmp_path / "cache" / "pdeconv" / "fashion-mnist-rts"
    (train_x, train_y, test_x, test_y), read_from, _ = data.read_dataset("fashion-mnist-rts", source)
    assert read_from == folder and data.find_data("fashion-mnist-rts", source) == folder
    original = data.load_tensors("fashion-mnist", source)
    torch.testing.assert_close(train_y, original[1])  # labels unchanged, in order
    torch.testing.assert_close(test_y, original[3])
    draws = np.load(folder / "draws.npz")
    for split, warped, plain in (("train", train_x, original[0]), ("test", test_x, original[2])):
        again = similarity_warp(plain, torch.from_numpy(draws[f"{split}_angle"]),
                                torch.from_numpy(draws[f"{split}_scale"]), torch.from_numpy(draws[f"{split}_shift"]))
        torch.testing.assert_close(again, warped, rtol=0, atol=0)  # the recorded draw gives the stored image
        assert not torch.equal(warped, plain)
    stamp = (folder / "train-images-idx3-ubyte").stat().st_mtime_ns
    assert data.rts_folder(source) == folder  # cached: not built again
    assert (folder / "train-images-idx3-ubyte").stat().st_mtime_ns == stamp
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no staging folder left behind
    other = make_fashion_mnist(tmp_path / "other", 40, 12, seed=5)  # other source files: another cache entry
    assert data.rts_folder(other) != folder


def test_fashion_mnist_rts_draw_is_fixed_per_image(tmp_path, make_fashion_mnist):
    small = data.rts_folder(make_fashion_mnist(tmp_path / "a", 20, 8))
    # the same first 20 images inside a larger file get the same draws
    large = data.rts_folder(make_fashion_mnist(tmp_path / "b", 30, 8))
    a, b = np.load(small / "draws.npz"), np.load(large / "draws.npz")
    np.testing.assert_array_equal(a["train_angle"], b["train_angle"][:20])
    np.testing.assert_array_equal(a["test_shift"], b["test_shift"])


def test_fashion_mnist_rts_without_its_source_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="fashion-mnist not found"):
        data.build_loaders("fashion-mnist-rts", download=False)


def test_validation_split_is_fixed_disjoint_from_training_and_drawn_before_a_subset(tmp_path, make_fashion_mnist,
                                                                                    make_image_folder):
    held = data.validation_indices(40, 6)
    assert torch.equal(held, data.validation_indices(40, 6)) and len(set(held.tolist())) == 6
    assert not torch.equal(held, data.subset_indices(40, 6))  # its own draw, not the subset's
    with pytest.raises(ValueError, match="val_split must be between 1 and 39"):
        data.validation_indices(40, 40)
    make_fashion_mnist(tmp_path / "fm", 40, 9)
    _, all_labels, _, _ = data.load_tensors("fashion-mnist", tmp_path / "fm")
    for seed in (0, 5):  # the same held-out images for every seed
        loaders = data.build_loaders("fashion-mnist", data_dir=tmp_path / "fm", batch_size=4, val_split=6, seed=seed)
        train, test, info = loaders  # still the three-tuple it always was
        assert loaders.val is not None and loaders.train is train and loaders.info is info
        val_labels = torch.cat([y for _, y in loaders.val])
        assert val_labels.tolist() == all_labels[held].tolist()  # in order, unaugmented
        train.set_epoch(1)
        seen = torch.cat([y for _, y in train])
        assert len(seen) == 32  # 34 left for training, whole batches of 4
    rest = sorted(set(range(40)) - set(held.tolist()))
    sub = data.build_loaders("fashion-mnist", data_dir=tmp_path / "fm", batch_size=2, val_split=6, train_subset=10)
    sub.train.set_epoch(0)
    expected = sorted(all_labels[torch.tensor(rest)[data.subset_indices(34, 10)]].tolist())
    assert sorted(torch.cat([y for _, y in sub.train]).tolist()) == expected  # the subset comes from the rest
    assert data.build_loaders("fashion-mnist", data_dir=tmp_path / "fm", batch_size=4).val is None
    make_image_folder(tmp_path / "tree", per_class=4)
    tree = data.build_loaders("imagefolder", data_dir=tmp_path / "tree", batch_size=2, workers=0, image_size=8,
                              val_split=3)
    assert sum(len(y) for _, y in tree.val) == 3 and len(tree.train) == 2  # 5 left: 2 whole batches
