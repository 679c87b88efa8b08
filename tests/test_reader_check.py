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
    for bad in ({"shifted_view": "yes"}, [1, 2]):
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
    assert load_readers(tmp_path / "tuned.safetensors")[1]["decoding"] == {"shifted_view": True}
    image = _crop([(4, 9), (20, 26), (40, 46)])
    once, mean, peaks = plain.scored(image)
    assert once == candidates(plain.log_probs(image)) and len(peaks) == len(once[0][0])
    twice, mean2, _ = tuned.scored(image)
    shifted = plain.log_probs(np.pad(image, ((0, 0), (2, 2))))
    assert shifted[0].shape[0] == plain.log_probs(image)[0].shape[0] + 1  # 4 px wider: one strip more
    assert twice == candidates(plain.log_probs(image) + shifted)
    assert np.array_equal(mean, mean2)  # digits' places come from the crop itself
