"""The reader's decoding: the Viterbi alignment, the digit classifier's check, the file's ``decoding``."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from mnist_cnn.errors import CheckpointError
from mnist_cnn.inference.ctc import align, candidates
from mnist_cnn.inference.reader import TUNED, Decoding, NumberReader
from mnist_cnn.models.reader import BLANK, Crnn, load_readers, save_reader


def _collapse(path: tuple[int, ...], blank: int) -> str:
    return "".join(str(c) for k, c in enumerate(path) if c != blank and (k == 0 or path[k - 1] != c))


def test_align_follows_the_most_probable_path_of_each_text() -> None:
    rng = np.random.default_rng(4)
    t, classes = 6, 3  # digits "0", "1" and the blank (2)
    logp = np.log(rng.dirichlet(np.ones(classes), size=t))
    best: dict[str, tuple[float, tuple[int, ...]]] = {}
    for path in itertools.product(range(classes), repeat=t):
        s = _collapse(path, classes - 1)
        score = float(sum(logp[k, c] for k, c in enumerate(path)))
        if s and (s not in best or score > best[s][0]):
            best[s] = (score, path)
    texts = sorted(best)
    for text, peaks in zip(texts, align(logp, texts), strict=True):
        path = best[text][1]
        runs = [k for k, c in enumerate(path) if c != classes - 1 and (k == 0 or path[k - 1] != c)]
        assert len(peaks) == len(text)
        for j, start in enumerate(runs):  # each character's peak lies in its own run of the best path
            end = start
            while end + 1 < t and path[end + 1] == path[start]:
                end += 1
            assert start <= peaks[j] <= end


def test_a_repeated_digit_keeps_its_own_place() -> None:
    """Before: when the frame-by-frame best path did not spell the string (here it reads "171": the
    first 7 is just under the blank), each character went where its digit is most probable after the
    previous one, so the first 7 took the second's frame and the second a blank frame after it; the
    digits' boxes and probabilities came from the wrong places."""
    t = 12
    logp = np.full((t, BLANK + 1), np.log(0.01))
    logp[:, BLANK] = np.log(0.9)
    for frame, digit, p in ((1, 1, 0.9), (4, 7, 0.45), (7, 7, 0.95), (10, 1, 0.9)):
        logp[frame] = np.log(0.005)
        logp[frame, digit] = np.log(p)
    logp[4, BLANK] = np.log(0.5)
    assert "".join(str(c) for c in logp.argmax(1) if c != BLANK) == "171"
    assert align(logp, ["1771", "171", ""]) == [[1, 4, 7, 10], [1, 7, 10], []]


def _crop(blobs: list[tuple[int, int]]) -> np.ndarray:
    """A reader crop [32, 64] with a bar from column a to b (inclusive) per blob, 24 px tall."""
    image = np.zeros((32, 64), np.float32)
    for a, b in blobs:
        image[4:28, a : b + 1] = 1.0
    return image


def test_decoding_comes_from_the_file_and_a_malformed_one_is_refused(tmp_path) -> None:
    assert Decoding.from_meta(None, "r") == Decoding() and not Decoding().shifted_view
    assert Decoding.from_meta(TUNED.to_meta(), "r") == TUNED and TUNED.shifted_view
    assert TUNED.to_meta() == {"shifted_view": True, "digit_check": 0.2} and Decoding().to_meta() == {
        "shifted_view": False
    }
    for bad in ({"shifted_view": "yes"}, [1, 2], {"digit_check": "x"}, {"digit_check": True}, {"digit_check": 2.0}):
        with pytest.raises(CheckpointError, match="'decoding'"):
            Decoding.from_meta(bad, "r")
    save_reader(tmp_path / "r.safetensors", Crnn(width=4, hidden=8), {"temperature": 1.0, "decoding": {"x": 1}})
    assert NumberReader(tmp_path / "r.safetensors").decoding == Decoding()


def test_the_shifted_view_reads_the_crop_twice_as_more_members(tmp_path) -> None:
    torch.manual_seed(0)
    model = Crnn(width=4, hidden=8)
    save_reader(tmp_path / "plain.safetensors", model, {"temperature": 1.0})
    save_reader(tmp_path / "tuned.safetensors", model, {"temperature": 1.0, "decoding": TUNED.to_meta()})
    plain, tuned = NumberReader(tmp_path / "plain.safetensors"), NumberReader(tmp_path / "tuned.safetensors")
    assert load_readers(tmp_path / "tuned.safetensors")[1]["decoding"] == TUNED.to_meta()
    image = _crop([(4, 9), (20, 26), (40, 46)])
    once, mean, views = plain.scored(image)
    assert once == candidates(plain.log_probs(image)) and len(views) == 1
    twice, mean2, views2 = tuned.scored(image)
    assert len(views2) == 2  # the one member on the crop and on it shifted
    shifted = plain.log_probs(np.pad(image, ((0, 0), (2, 2))))
    assert shifted[0].shape[0] == plain.log_probs(image)[0].shape[0] + 1  # 4 px wider: one strip more
    assert twice == candidates(plain.log_probs(image) + shifted)
    assert np.array_equal(mean, mean2)  # digits' places come from the crop itself


class _Says:
    """A stand-in single-digit classifier: the same probabilities for every image it is shown."""

    def __init__(self, probs: list[float]):
        self.probs, self.seen = np.asarray(probs, np.float32), []

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        self.seen.append(images)
        return np.tile(self.probs, (len(images), 1))


def test_the_digit_check_changes_a_doubtful_digit_and_leaves_a_sure_one(tmp_path) -> None:
    save_reader(tmp_path / "r.safetensors", Crnn(width=4, hidden=8), {"decoding": {"digit_check": 0.2}})
    reader = NumberReader(tmp_path / "r.safetensors")
    nine = [0.001] * 9 + [0.991]  # the classifier: surely a 9
    reader._digits = _Says(nine)
    doubt = np.full(10, 0.01)
    doubt[4], doubt[9] = 0.5, 0.42  # the reader: a 4 or a 9
    sure = np.full(10, 0.001)
    sure[4] = 0.991
    image = _crop([(4, 9), (20, 26)])
    text, dists = reader.checked("44", [doubt, sure], image, [0.0, 16.0, 64.0])
    assert text == "94" and all(abs(float(d.sum()) - 1) < 1e-6 for d in dists) and dists[0][9] > 0.5
    (shown,) = reader._digits.seen
    assert shown.shape == (2, 28, 28) and shown.dtype == np.uint8 and shown.max() > 0  # each digit's columns


def test_a_checked_string_takes_its_own_probability_and_the_reader_s_string_becomes_an_alternative(tmp_path) -> None:
    from mnist_cnn.inference.ctc import string_probability
    from mnist_cnn.inference.preprocessing.rows import RowCrop

    torch.manual_seed(0)
    model = Crnn(width=4, hidden=8)
    save_reader(tmp_path / "plain.safetensors", model, {})
    save_reader(tmp_path / "checked.safetensors", model, {"decoding": {"digit_check": 1.0}})
    crop = RowCrop(_crop([(4, 9), (20, 26), (40, 46)]), (0, 0, 64, 32), 1.0, (64, 32))
    plain = NumberReader(tmp_path / "plain.safetensors").read_crop(crop)
    checked = NumberReader(tmp_path / "checked.safetensors")
    checked._digits = _Says([0.0] * 7 + [1.0, 0.0, 0.0])  # a 7, whatever it is shown
    row = checked.read_crop(crop)
    assert row.number == "7" * len(plain.number) != plain.number  # the untrained reader reads "3737373"
    _, _, views = checked.scored(crop.image)
    assert row.raw_probability == pytest.approx(string_probability(views, row.number))
    assert plain.number in [a["number"] for a in row.alternatives]
    assert all(d["label"] == "7" and d["top_k"][0]["label"] == "7" for d in row.digits)
