"""The reader's composed training rows (elastic bending of each digit: another writer's hand), and a thin
1 at a row's end."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from mnist_cnn.training.reader_data import elastic, synth_rows


def _bar() -> np.ndarray:
    d = np.zeros((34, 34), np.float32)
    d[5:29, 15:19] = 1.0  # an upright stroke
    return d


def test_bending_moves_strokes_a_little_and_keeps_their_ink() -> None:
    d = _bar()
    assert np.array_equal(elastic(d, 0.0, np.random.default_rng(0)), d)
    bent = elastic(d, 34.0, np.random.default_rng(0))
    assert bent.dtype == d.dtype and bent.shape == d.shape
    assert not np.allclose(bent, d)  # the stroke moved
    assert abs(float(bent.sum()) - float(d.sum())) < 0.35 * float(d.sum())  # ...stretched or squeezed, not lost
    shift = np.subtract(ndi.center_of_mass(bent), ndi.center_of_mass(d))
    assert float(np.hypot(*shift)) < 3.0  # a bend, not a move to elsewhere
    assert np.array_equal(bent, elastic(d, 34.0, np.random.default_rng(0)))  # the generator alone decides
    stronger = elastic(d, 80.0, np.random.default_rng(0))
    assert np.abs(stronger - d).sum() > np.abs(bent - d).sum()


def test_composed_rows_with_bent_digits_are_valid_rows_and_differ() -> None:
    images = np.stack([(_bar() * 255).astype(np.uint8)[3:31, 3:31]] * 20)
    labels = np.ones(20, np.int64)
    plain = synth_rows(images, labels, 12, seed=4)
    bent = synth_rows(images, labels, 12, seed=4, bend=40.0)
    assert len(bent.texts) == 12 and all(set(t) == {"1"} and 2 <= len(t) <= 8 for t in bent.texts)
    assert all(c.dtype == np.uint8 and c.shape[0] == 32 and c.shape[1] % 4 == 0 for c in bent.crops)
    assert any(a.shape != b.shape or not np.array_equal(a, b) for a, b in zip(plain.crops, bent.crops, strict=True))


@pytest.mark.integration
def test_a_thin_one_at_a_rows_end_on_plain_paper_stays_in_the_row(real_data) -> None:
    """Three validation photos (seed 3): a thin 1 at the row's end on plain paper, touching its
    neighbour, in shade or blurred (its area over its length 5.4-6.2% of the digits' height, as thin
    as a box's side). With no paper line near it, it is not taken for one and stays in the row
    ("104627" was read "04627"; the reader itself still skips the other two 1s at the crop's edge)."""
    from benchmarks import number_reading as nr
    from mnist_cnn.inference.preprocessing import preprocess_rows
    from mnist_cnn.inference.reader import NumberReader

    images, labels = nr.split_digits(str(real_data), "val")
    for cond, k, text in (("touching", 170, "104627"), ("shadow", 92, "153299"), ("motion_blur", 179, "12036")):
        data, info = nr.render_numbers(images, labels, cond, k + 1, 3)[k]
        assert info["text"] == text
        (crop,) = preprocess_rows(data)
        assert crop.box[0] <= info["boxes"][0][2]  # the 1 is in the row
        if cond == "touching":
            assert NumberReader().read(data).number == text


def test_edge_padding_puts_blank_columns_beside_the_rows_and_keeps_their_frames_inside() -> None:
    """``augment(edge_pad=N)``: the batch gains 0..N blank columns at each end (before the stretch),
    so the ink starts further in; the frames still fit the crop."""
    import torch

    from mnist_cnn.models.reader import STRIDE
    from mnist_cnn.training.reader import augment

    x = torch.zeros(4, 1, 32, 64)
    x[:, :, 4:28, 0:4] = 1.0  # a 1 at the crop's very start
    frames = torch.full((4,), 64 // STRIDE)
    starts, widths = [], []
    for seed in range(12):
        y, f = augment(x, frames, torch.Generator().manual_seed(seed), edge_pad=12)
        assert bool((f >= 1).all()) and bool((f <= y.shape[3] // STRIDE).all())
        starts.append(int(torch.nonzero(y[0, 0].amax(0) > 0.3)[0]))
        widths.append(y.shape[3])
    plain = [augment(x, frames, torch.Generator().manual_seed(s))[0] for s in range(12)]
    assert max(starts) >= 6  # the ink moved in by several columns in some batches
    assert sum(widths) > sum(p.shape[3] for p in plain)
