"""CTC decoding over a row's frames [T, 11] (10 digits, then the blank): the prefix beam search, the
exact probability of a string (the forward algorithm over every alignment), several models' strings
scored together, and each character's frame on the string's most probable alignment (Viterbi).
"""

from __future__ import annotations

import numpy as np

BEAM = 8  # prefixes kept by the beam search


def candidates(logps: list[np.ndarray], beam: int = BEAM) -> list[tuple[str, float]]:
    """The strings the members' beams found, each with its exact probability (every alignment summed,
    :func:`string_logp`); with several members, the geometric mean of theirs. Best first."""
    found = list(dict.fromkeys(s for lp in logps for s, _ in beam_search(lp, beam)))
    return sorted(zip(found, _scores(logps, found).tolist(), strict=True), key=lambda sq: -sq[1])


def string_probability(logps: list[np.ndarray], text: str) -> float:
    """The probability of ``text`` as :func:`candidates` scores it."""
    return float(_scores(logps, [text])[0])


def _scores(logps: list[np.ndarray], texts: list[str]) -> np.ndarray:
    """Each text's probability: the geometric mean of its exact probabilities under ``logps``."""
    return np.exp(np.mean([strings_logp(lp, texts) for lp in logps], axis=0))


def beam_search(logp: np.ndarray, beam: int = BEAM) -> list[tuple[str, float]]:
    """CTC prefix beam search over [T, 11] log-probabilities: the most probable strings with their
    probabilities (each the sum over its alignments that the beam kept), best first."""
    blank = logp.shape[1] - 1
    probs = np.exp(logp.astype(np.float64))
    beams: dict[str, tuple[float, float]] = {"": (1.0, 0.0)}  # prefix -> (p ending in blank, p ending in a char)
    for t in range(len(probs)):
        pt = probs[t]
        nxt: dict[str, list[float]] = {}

        def add(s: str, pb: float, pc: float, nxt: dict[str, list[float]] = nxt) -> None:
            e = nxt.setdefault(s, [0.0, 0.0])
            e[0] += pb
            e[1] += pc

        for s, (pb, pc) in beams.items():
            add(s, (pb + pc) * pt[blank], 0.0)
            last = int(s[-1]) if s else -1
            for c in range(blank):
                if pt[c] < 1e-4:
                    continue
                if c == last:
                    add(s, 0.0, pc * pt[c])  # a repeat without a blank between stays one character
                    add(s + str(c), 0.0, pb * pt[c])
                else:
                    add(s + str(c), 0.0, (pb + pc) * pt[c])
        top = sorted(nxt.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))[:beam]
        beams = {s: (v[0], v[1]) for s, v in top}
    return sorted(((s, v[0] + v[1]) for s, v in beams.items()), key=lambda sv: -sv[1])


def string_logp(logp: np.ndarray, text: str) -> float:
    """log p(text | row): CTC's forward algorithm over every alignment of ``text``."""
    return float(strings_logp(logp, [text])[0])


def strings_logp(logp: np.ndarray, texts: list[str]) -> np.ndarray:
    """log p(text | row) of each of ``texts`` at once: CTC's forward algorithm over [K, S] arrays,
    each text extended with blanks (``-1-9-9-8-``) and padded to the longest (padding stays -inf)."""
    emit, valid, allow = _trellis(logp, texts)
    alpha = np.full(valid.shape, -np.inf)
    alpha[:, :2] = emit[0, :, :2]
    for t in range(1, len(logp)):
        alpha = np.logaddexp.reduce(_arrivals(alpha, allow), axis=0) + emit[t]
    ends = valid.sum(1)
    last = alpha[np.arange(len(texts)), ends - 1]
    before = np.where(ends > 1, alpha[np.arange(len(texts)), np.maximum(ends - 2, 0)], -np.inf)
    return np.logaddexp(last, before)


def align(logp: np.ndarray, texts: list[str]) -> list[list[int]]:
    """Per text: each character's peak frame (where its class is most probable) within the frames that
    the text's most probable alignment (CTC Viterbi) gives it; all texts at once, like :func:`strings_logp`.
    A repeated digit keeps its own frames, which "the frame where this digit peaks" would not."""
    if not texts:
        return []
    emit, valid, allow = _trellis(logp, texts)
    score = np.full(valid.shape, -np.inf)
    score[:, :2] = emit[0, :, :2]
    back = np.zeros((len(logp), *valid.shape), np.int8)  # how far back (0, 1 or 2 states) each state came from
    for t in range(1, len(logp)):
        steps = _arrivals(score, allow)
        back[t] = steps.argmax(0)
        score = np.take_along_axis(steps, back[t][None].astype(np.intp), 0)[0] + emit[t]
    out = []
    for i, text in enumerate(texts):
        end = 2 * len(text)  # the last state: the final blank, or the last character (state end - 1)
        s = end if end == 0 or score[i, end] >= score[i, end - 1] else end - 1
        states = [s]
        for t in range(len(logp) - 1, 0, -1):
            s -= int(back[t, i, s])
            states.append(s)
        path = np.array(states[::-1])
        peaks = []
        for j, ch in enumerate(text):
            frames = np.flatnonzero(path == 2 * j + 1)
            peaks.append(int(frames[np.argmax(logp[frames, int(ch)])]) if frames.size else 0)
        out.append(peaks)
    return out


def _arrivals(score: np.ndarray, allow: np.ndarray) -> np.ndarray:
    """[3, K, S]: each state's score at the previous frame arriving by staying, from the state before,
    or from two before (skipping a blank, where ``allow``)."""
    size = score.shape[1]
    shift1 = np.pad(score, ((0, 0), (1, 0)), constant_values=-np.inf)[:, :size]
    shift2 = np.where(allow, np.pad(score, ((0, 0), (2, 0)), constant_values=-np.inf)[:, :size], -np.inf)
    return np.stack([score, shift1, shift2])


def _trellis(logp: np.ndarray, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each text with blanks around its characters (``-1-9-9-8-``), padded to the longest: the states'
    log-probabilities per frame [T, K, S] (-inf for padding), which states are real [K, S], and where a
    character may follow the one two places back directly (skipping the blank: unless it repeats it)."""
    blank = logp.shape[1] - 1
    ext = [[blank] + [v for ch in t for v in (int(ch), blank)] for t in texts]
    size = max(len(e) for e in ext)
    labels = np.full((len(texts), size), blank)
    valid = np.zeros((len(texts), size), bool)
    for k, e in enumerate(ext):
        labels[k, : len(e)], valid[k, : len(e)] = e, True
    allow = np.zeros_like(valid)
    allow[:, 2:] = (labels[:, 2:] != blank) & (labels[:, 2:] != labels[:, :-2])
    return np.where(valid[None], logp[:, labels], -np.inf), valid, allow
