"""Batched digit augmentation: shapes, ranges, determinism, no flips, identity at strength 0."""

from __future__ import annotations

import math

import pytest
import torch

from mnist_cnn.errors import ConfigError
from mnist_cnn.training.augment import (
    PRESETS,
    AugmentConfig,
    augment_batch,
    elastic_field,
    parse_augment,
    random_affine_matrices,
)
from tests.conftest import synthetic_digits


def _batch(n: int = 32) -> torch.Tensor:
    """Normalised synthetic digits [n, 1, 28, 28] (background = the minimum, as in training)."""
    x, _ = synthetic_digits(n, seed=3)
    x = torch.from_numpy(x).float().unsqueeze(1) / 255
    return (x - 0.13) / 0.31


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", list(PRESETS))
def test_shape_dtype_and_value_range_are_kept(name):
    x = _batch()
    out = augment_batch(x.clone(), parse_augment(name), _gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all()
    # bilinear resampling mixes pixels and background: never outside the input's range
    assert out.min() >= x.min() - 1e-5 and out.max() <= x.max() + 1e-5


@pytest.mark.parametrize("name", ["light", "medium", "strong", "photo"])
def test_same_seed_same_result_other_seed_differs(name):
    x, cfg = _batch(), parse_augment(name)
    a = augment_batch(x, cfg, _gen(1))
    b = augment_batch(x, cfg, _gen(1))
    c = augment_batch(x, cfg, _gen(2))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a, x)  # it does change the images


def test_strength_zero_is_the_identity():
    x = _batch()
    for cfg in (parse_augment("none"), AugmentConfig(), AugmentConfig(rotate=15, p=0.0)):
        assert not cfg.enabled
        assert torch.equal(augment_batch(x, cfg, _gen()), x)


def test_images_not_drawn_under_p_are_untouched_by_affine_and_elastic():
    x = _batch(200)
    out = augment_batch(x, AugmentConfig(rotate=15, elastic_alpha=2.0, p=0.5), _gen())
    same = (out == x).flatten(1).all(1)
    assert 0.3 < same.float().mean() < 0.7  # about half are left exactly as they were


def test_no_flips_every_matrix_preserves_orientation():
    # a flip has a negative determinant; rotation @ shear @ zoom always has a positive one
    cfg = AugmentConfig(rotate=30, scale=0.3, shear=30, translate=0.2)
    theta = random_affine_matrices(5000, cfg, _gen(), torch.device("cpu"))
    assert (torch.linalg.det(theta[:, :, :2]) > 0).all()


def test_no_flips_on_an_asymmetric_image():
    # an "L": copies deformed as strongly as the strong preset (shifts aside, which could move the
    # L onto its mirror's place) stay closer to the L than to its mirror image
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 6:22, 8:11] = 1.0
    x[:, :, 19:22, 8:20] = 1.0
    strong = PRESETS["strong"]
    cfg = AugmentConfig(
        rotate=strong.rotate, scale=strong.scale, shear=strong.shear, elastic_alpha=strong.elastic_alpha
    )
    out = augment_batch(x, cfg, _gen())
    mirror = x.flip(-1)
    assert ((out - x).pow(2).sum((1, 2, 3)) < (out - mirror).pow(2).sum((1, 2, 3))).all()


def test_affine_parameters_stay_within_their_bounds():
    cfg = AugmentConfig(rotate=10, translate=0.1)
    theta = random_affine_matrices(5000, cfg, _gen(), torch.device("cpu"))
    angle = torch.rad2deg(torch.atan2(theta[:, 1, 0], theta[:, 0, 0])).abs()
    assert angle.max() <= 10 + 1e-4 and angle.max() > 9  # the whole range is used
    shift_px = theta[:, :, 2].abs() * 28 / 2  # grid units -> pixels
    assert shift_px.max() <= 0.1 * 28 + 1e-4 and shift_px.max() > 0.09 * 28


def test_elastic_displacement_is_at_most_alpha_pixels_and_smooth():
    cfg = AugmentConfig(elastic_alpha=2.0, elastic_sigma=4.0)
    disp = elastic_field(16, 28, 28, cfg, _gen(), torch.device("cpu")) * 28 / 2  # pixels
    assert disp.shape == (16, 28, 28, 2)
    assert disp.abs().amax() <= 2.0 + 1e-4
    # smooth: neighbours move almost together (unsmoothed noise would differ by up to 4 px)
    assert (disp[:, 1:] - disp[:, :-1]).abs().amax() < 1.0


def test_elastic_with_a_wide_kernel_and_non_square_images():
    cfg = AugmentConfig(elastic_alpha=1.0, elastic_sigma=12.0)  # 3 sigma > image side
    out = augment_batch(torch.rand(3, 1, 20, 28), cfg, _gen())
    assert out.shape == (3, 1, 20, 28) and torch.isfinite(out).all()


def test_parse_presets_pairs_and_objects():
    assert parse_augment("medium") == PRESETS["medium"]
    assert parse_augment(None) == PRESETS["none"]
    assert parse_augment("rotate=10, scale=0.1") == AugmentConfig(rotate=10, scale=0.1)
    assert parse_augment({"shear": 5}) == AugmentConfig(shear=5)


@pytest.mark.parametrize(
    "bad",
    [
        "wild",
        "rotate=x",
        "rotat=3",
        "rotate",
        {"p": 2},
        {"rotate": -1},
        {"rotate": math.nan},
        {"stroke": 1.5},
        "lines=2",
        "elastic_alpha=1,elastic_sigma=0",
        3,
    ],
)
def test_bad_settings_are_one_line_config_errors(bad):
    with pytest.raises(ConfigError) as err:
        parse_augment(bad)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "cfg",
    [
        AugmentConfig(stroke=1.0),
        AugmentConfig(blur=1.0),
        AugmentConfig(noise=0.1),
        AugmentConfig(lines=1.0),
        AugmentConfig(frame=1.0),
    ],
    ids=["stroke", "blur", "noise", "lines", "frame"],
)
def test_each_photo_effect_changes_pixels_and_keeps_the_range(cfg):
    x = _batch(64)
    out = augment_batch(x, cfg, _gen(5))
    assert cfg.enabled and out.shape == x.shape and torch.isfinite(out).all()
    assert out.min() >= x.min() - 1e-5 and out.max() <= x.max() + 1e-5
    changed = (out - x).abs().flatten(1).amax(1) > 1e-3
    assert changed.float().mean() > 0.4  # most images (strokes: half dilated, half eroded)
    assert torch.equal(out, augment_batch(x, cfg, _gen(5)))


def test_stroke_width_change_goes_both_ways():
    x = _batch(200)
    out = augment_batch(x, AugmentConfig(stroke=1.0), _gen(0))
    ink = (x - x.amin()).sum((1, 2, 3))
    after = (out - x.amin()).sum((1, 2, 3))
    assert (after > 1.05 * ink).float().mean() > 0.2 and (after < 0.95 * ink).float().mean() > 0.2


def test_line_fragments_are_axis_aligned_and_frames_near_the_border():
    blank = torch.zeros(200, 1, 28, 28)
    blank[:, :, 0, 0] = 1.0  # ink level 1 (the augmenter works relative to each image's ink)
    lines = augment_batch(blank, AugmentConfig(lines=1.0), _gen(1))[:, 0]
    lines[:, 0, 0] = 0
    on = lines > 0.05
    rows, cols = on.any(2).sum(1), on.any(1).sum(1)
    assert ((rows == 1) | (cols == 1)).all()  # one row or one column each
    frames = augment_batch(blank, AugmentConfig(frame=1.0), _gen(2))[:, 0]
    frames[:, 0, 0] = 0
    inner = frames[:, 5:23, 5:23]
    assert frames.amax((1, 2)).min() > 0.25 and inner.max() == 0  # only in the outer 4 pixels
