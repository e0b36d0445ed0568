"""pdeconv.warp: the similarity warp's conventions (direction of rotation, axes, centre) against an independent
oracle, and the per-image draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from pdeconv.warp import draw_similarities, similarity_warp


def _one(image: np.ndarray, angle: float, scale: float = 1.0, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    out = similarity_warp(torch.from_numpy(image)[None, None], torch.tensor([angle]), torch.tensor([scale]),
                          torch.tensor([[dx, dy]]))
    return out[0, 0].numpy()


@pytest.mark.parametrize("shape", [(9, 9), (7, 12)])  # odd and non-square canvases
def test_a_dot_right_of_centre_turns_upward_counter_clockwise(shape):
    h, w = shape
    cy, cx = (h - 1) // 2, (w - 1) // 2  # a pixel centre when the side is odd
    image = np.zeros(shape, np.float64)
    image[cy, cx + 2] = 1.0
    expected = np.zeros(shape)
    if h % 2 and w % 2:
        expected[cy - 2, cx] = 1.0  # +90°: right of the centre → above it (rows point down)
        np.testing.assert_allclose(_one(image, 90.0), expected, atol=1e-9)
        expected[:] = 0
        expected[cy + 2, cx] = 1.0  # −90°: below it
        np.testing.assert_allclose(_one(image, -90.0), expected, atol=1e-9)
    moved = np.zeros(shape)
    moved[cy + 1, cx + 2 + 2] = 1.0  # a shift of (dx, dy) = (2, 1) moves it 2 columns right and 1 row down
    np.testing.assert_allclose(_one(image, 0.0, dx=2.0, dy=1.0), moved, atol=1e-9)


def test_scale_is_about_the_canvas_centre():
    image = np.zeros((11, 11))
    image[5, 9] = 1.0  # 4 pixels right of the centre (5, 5)
    out = _one(image, 0.0, scale=0.5)  # → 2 pixels right of it
    assert out[5, 7] == pytest.approx(1.0) and out.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("shape", [(28, 28), (20, 31)])
def test_agrees_with_scipy_affine_transform(shape):
    """An independent implementation: scipy maps output (row, col) to input (row, col) by matrix @ o + offset;
    bilinear with zeros outside ('grid-constant'). uint8 outputs agree to one grey level (rounding)."""
    rng = np.random.default_rng(3)
    h, w = shape
    images = rng.integers(0, 256, (6, 1, h, w), dtype=np.uint8)
    d = draw_similarities(0, 0, 6)
    out = similarity_warp(torch.from_numpy(images), torch.from_numpy(d["angle"]), torch.from_numpy(d["scale"]),
                          torch.from_numpy(d["shift"])).numpy()
    c = np.array([(h - 1) / 2, (w - 1) / 2])  # (row, col)
    for i in range(6):
        t = np.radians(d["angle"][i])
        # In (x, y), p = c + R(θ)ᵀ (p' − c − t) / s with R(θ)ᵀ = [[cos, −sin], [sin, cos]]; in (row, col) = (y, x):
        inverse = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]]) / d["scale"][i]
        shift = d["shift"][i][::-1]  # (dy, dx)
        offset = c - inverse @ (c + shift)
        oracle = ndimage.affine_transform(images[i, 0].astype(np.float64), inverse, offset, order=1,
                                          mode="grid-constant", cval=0.0)
        diff = np.abs(out[i, 0].astype(int) - np.clip(np.round(oracle), 0, 255).astype(int))
        assert diff.max() <= 1, i


def test_float_batches_keep_their_dtype_and_identity_is_exact():
    x = torch.randn(2, 3, 5, 6)
    same = similarity_warp(x, torch.zeros(2), torch.ones(2), torch.zeros(2, 2))
    assert same.dtype == torch.float32
    torch.testing.assert_close(same, x, rtol=1e-6, atol=1e-6)  # bilinear at the pixel centres themselves


def test_bad_arguments_are_refused():
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match="angle"):
        similarity_warp(x, torch.zeros(3), torch.ones(2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="positive"):
        similarity_warp(x, torch.zeros(2), torch.zeros(2), torch.zeros(2, 2))


def test_each_images_draw_depends_on_its_index_alone():
    a, b = draw_similarities(7, 1, 50), draw_similarities(7, 1, 20)
    for key in ("angle", "scale", "shift"):
        np.testing.assert_array_equal(a[key][:20], b[key])
    assert not np.array_equal(draw_similarities(7, 0, 20)["angle"], b["angle"])  # the split is part of the seed
    assert a["angle"].min() >= -180 and a["angle"].max() < 180
    assert a["scale"].min() >= 0.7 and a["scale"].max() < 1.0
    assert np.abs(a["shift"]).max() <= 6
