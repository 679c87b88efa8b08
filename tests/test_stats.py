"""Statistics against hand-computed values: t intervals, paired/Welch differences, McNemar, votes, verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mnist_cnn.errors import ConfigError
from mnist_cnn.evaluation.stats import Difference, diff_interval, majority_vote, mcnemar, summarise

# t quantiles from printed tables (two-sided 95%): df 2 and df 3
T_975_DF2 = 4.302653
T_975_DF3 = 3.182446


def test_summarise_matches_hand_computed_t_interval() -> None:
    s = summarise([1.0, 2.0, 3.0, 4.0])
    std = math.sqrt(5 / 3)  # squared deviations 2.25+0.25+0.25+2.25 = 5, over n-1 = 3
    half = T_975_DF3 * std / 2  # sqrt(4) = 2
    assert s.n == 4 and s.mean == pytest.approx(2.5)
    assert s.std == pytest.approx(std)
    assert (s.ci_low, s.ci_high) == pytest.approx((2.5 - half, 2.5 + half), abs=1e-5)


def test_summarise_one_value_has_no_spread_and_zero_values_is_an_error() -> None:
    s = summarise([0.99])
    assert s.mean == 0.99 and math.isnan(s.std) and math.isnan(s.ci_low)
    with pytest.raises(ConfigError):
        summarise([])


def test_paired_difference_uses_the_seedwise_differences() -> None:
    a, b = [0.99, 0.98, 0.97], [0.97, 0.97, 0.96]
    d = diff_interval(a, b, paired=True)
    # differences 0.02, 0.01, 0.01: mean 0.013333, sd sqrt((0.006667^2 + 2 * 0.003333^2) / 2) = 0.0057735
    half = T_975_DF2 * 0.0057735 / math.sqrt(3)
    assert d.method == "paired t"
    assert d.mean == pytest.approx(0.0133333, abs=1e-6)
    assert (d.ci_low, d.ci_high) == pytest.approx((0.0133333 - half, 0.0133333 + half), abs=1e-5)
    assert not d.excludes_zero  # the lower bound is just below 0


def test_welch_difference_degrees_of_freedom() -> None:
    from scipy.stats import t

    d = diff_interval([1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0], paired=False)
    # var/n: 1/3 and (20/3)/4 = 5/3; se = sqrt(2); df = 4 / ((1/3)^2/2 + (5/3)^2/3) = 4.075472
    df = 4 / ((1 / 3) ** 2 / 2 + (5 / 3) ** 2 / 3)
    assert df == pytest.approx(4.075472, abs=1e-6)
    half = t.ppf(0.975, df) * math.sqrt(2)
    assert d.method == "welch t" and d.mean == pytest.approx(-3.0)
    assert (d.ci_low, d.ci_high) == pytest.approx((-3 - half, -3 + half))
    assert d.excludes_zero is False


def test_paired_difference_needs_equal_lengths() -> None:
    with pytest.raises(ConfigError):
        diff_interval([1.0, 2.0], [1.0], paired=True)


def _correct(both: int, b: int, c: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    ra = np.array([1] * both + [1] * b + [0] * c + [0] * neither, dtype=bool)
    rb = np.array([1] * both + [0] * b + [1] * c + [0] * neither, dtype=bool)
    return ra, rb


def test_mcnemar_exact_and_chi2_by_hand() -> None:
    m = mcnemar(*_correct(80, 10, 2, 8))
    assert (m.n, m.both_right, m.b, m.c, m.both_wrong) == (100, 80, 10, 2, 8)
    # exact: 2 * P(X <= 2), X ~ Bin(12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert m.p_exact == pytest.approx(158 / 4096)
    assert m.chi2 == pytest.approx(49 / 12)  # (|10 - 2| - 1)^2 / 12
    assert m.p_chi2 == pytest.approx(math.erfc(math.sqrt(49 / 12 / 2)))  # chi2 with 1 df: P(|Z| > sqrt(x))
    assert m.p_value == m.p_exact and mcnemar(*_correct(80, 10, 2, 8), method="chi2").p_value == m.p_chi2


def test_mcnemar_symmetric_and_degenerate_cases() -> None:
    assert mcnemar(*_correct(50, 5, 5, 0)).p_exact == 1.0  # 2 * 638/1024 > 1 is capped
    same = mcnemar(*_correct(7, 0, 0, 3))
    assert same.p_exact == 1.0 and same.p_chi2 == 1.0
    flipped = mcnemar(*_correct(80, 2, 10, 8))
    assert flipped.p_exact == pytest.approx(158 / 4096) and (flipped.b, flipped.c) == (2, 10)
    with pytest.raises(ConfigError):
        mcnemar(np.ones(3, bool), np.ones(4, bool))


def test_format_p_never_prints_zero() -> None:
    from mnist_cnn.evaluation.stats import format_p

    assert format_p(0.0386) == "0.0386" and format_p(0.0) == "< 1e-300" and format_p(2.4e-150) == "2.4e-150"


def test_majority_vote_counts_votes_and_breaks_ties_by_mean_probability() -> None:
    # 3 models, 2 images, 3 classes
    probs = np.array(
        [
            [[0.6, 0.3, 0.1], [0.1, 0.5, 0.4]],
            [[0.2, 0.7, 0.1], [0.1, 0.2, 0.7]],
            [[0.5, 0.4, 0.1], [0.3, 0.3, 0.4]],
        ]
    )
    # image 0: votes 0,1,0 -> 0 even though class 1 has the largest single probability
    # image 1: votes 1,2,2 -> 2
    assert majority_vote(probs).tolist() == [0, 2]
    tie = np.array([[[0.9, 0.1]], [[0.4, 0.6]]])  # one vote each; mean probability 0.65 vs 0.35
    assert majority_vote(tie).tolist() == [0]
    assert majority_vote(probs[:1]).tolist() == probs[0].argmax(1).tolist()


def _mc(b: int, c: int):
    return mcnemar(*_correct(9000, b, c, 100))


def test_verdict_follows_the_statistics() -> None:
    from mnist_cnn.reports.compare import verdict

    sig = _mc(60, 20)
    assert sig.p_value < 0.05
    text, kind = verdict("model1", "model2", Difference(0.004, 0.001, 0.007, "paired t", 3, 3), sig, 0.05, 3, 3)
    assert kind == "sig" and "**model1** is more accurate than **model2** by 0.40 pp" in text
    assert "0.10 pp to 0.70 pp" in text and f"p = {sig.p_value:.3g}" in text and "significant at 5%" in text
    # B ahead: the sentence names B first and gives a positive gap
    text, _ = verdict("model1", "model2", Difference(-0.004, -0.007, -0.001, "paired t", 3, 3), _mc(20, 60), 0.05, 3, 3)
    assert text.startswith("**model2** is more accurate than **model1** by 0.40 pp")
    # significant on the test set, but the seeds disagree
    text, kind = verdict("a", "b", Difference(0.004, -0.002, 0.010, "paired t", 3, 3), sig, 0.05, 3, 3)
    assert kind == "warn" and "includes 0" in text
    nosig = _mc(22, 20)
    assert nosig.p_value > 0.05
    text, kind = verdict("a", "b", Difference(0.0002, -0.003, 0.0034, "paired t", 3, 3), nosig, 0.05, 3, 3)
    assert kind == "nosig" and text.startswith("No significant difference") and "≥ 0.05" in text
    # one seed each: no interval, and the verdict says so
    text, kind = verdict("a", "b", Difference(0.004, math.nan, math.nan, "none", 1, 1), sig, 0.05, 1, 1)
    assert kind == "warn" and "one seed per model" in text and "CI" not in text
