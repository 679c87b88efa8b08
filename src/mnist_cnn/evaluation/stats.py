"""Statistics for comparing models: mean ± std over seeds, t confidence intervals, McNemar's test.

Two sources of uncertainty matter when two CNNs are compared on MNIST:

* training randomness (initialisation, data order, dropout): measured by training several seeds
  and summarised by a t confidence interval over seeds (:func:`summarise`, :func:`diff_interval`);
* the finite test set: measured by McNemar's test on paired per-image predictions (:func:`mcnemar`),
  which only looks at the images the two models disagree on.

Only numpy and scipy (a dependency of scikit-learn); nothing here imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from mnist_cnn.errors import ConfigError


@dataclass(frozen=True)
class Summary:
    """Mean, sample std (ddof 1) and a two-sided t confidence interval of ``n`` values."""

    n: int
    mean: float
    std: float  # nan for n < 2
    ci_low: float  # nan for n < 2
    ci_high: float
    confidence: float = 0.95

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _t_half_width(std: float, n: int, confidence: float) -> float:
    """Half width t_{1-a/2, n-1} * std / sqrt(n) of the t interval for a mean."""
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)


def summarise(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Summary:
    """Mean ± std and the t interval mean ± t * std / sqrt(n) (needs n >= 2 for std and CI)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ConfigError("cannot summarise zero values; train at least one run per model")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence={confidence} must be in (0, 1), e.g. 0.95")
    mean = float(x.mean())
    if x.size < 2:
        return Summary(1, mean, math.nan, math.nan, math.nan, confidence)
    std = float(x.std(ddof=1))
    h = _t_half_width(std, x.size, confidence)
    return Summary(int(x.size), mean, std, mean - h, mean + h, confidence)


@dataclass(frozen=True)
class Difference:
    """A - B: mean difference and its confidence interval, paired over seeds or Welch's."""

    mean: float
    ci_low: float
    ci_high: float
    method: str  # "paired t" | "welch t" | "none"
    n_a: int
    n_b: int
    confidence: float = 0.95

    @property
    def excludes_zero(self) -> bool:
        return not math.isnan(self.ci_low) and (self.ci_low > 0 or self.ci_high < 0)

    def to_dict(self) -> dict[str, float | str | bool]:
        return {**asdict(self), "excludes_zero": self.excludes_zero}


def diff_interval(a: Sequence[float], b: Sequence[float], paired: bool, confidence: float = 0.95) -> Difference:
    """Confidence interval of mean(a) - mean(b).

    ``paired``: a[k] and b[k] share seed k (same validation split and data order), so the interval
    is the t interval of the differences a[k] - b[k]. Otherwise Welch's interval (unequal
    variances, Welch–Satterthwaite degrees of freedom). nan bounds when there are too few values.
    """
    from scipy.stats import t

    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mean = float(xa.mean() - xb.mean())
    if paired:
        if xa.shape != xb.shape:
            raise ConfigError(f"paired difference needs equal numbers of values ({xa.size} vs {xb.size})")
        s = summarise(xa - xb, confidence)
        return Difference(mean, s.ci_low, s.ci_high, "paired t" if s.n > 1 else "none", xa.size, xb.size, confidence)
    if xa.size < 2 or xb.size < 2:
        return Difference(mean, math.nan, math.nan, "none", xa.size, xb.size, confidence)
    va, vb = xa.var(ddof=1) / xa.size, xb.var(ddof=1) / xb.size
    se = math.sqrt(va + vb)
    if se == 0:
        return Difference(mean, mean, mean, "welch t", xa.size, xb.size, confidence)
    df = (va + vb) ** 2 / (va**2 / (xa.size - 1) + vb**2 / (xb.size - 1))
    h = float(t.ppf(0.5 + confidence / 2, df)) * se
    return Difference(mean, mean - h, mean + h, "welch t", xa.size, xb.size, confidence)


@dataclass(frozen=True)
class McNemar:
    """McNemar's test on paired predictions of models A and B over the same images.

    ``b``: images A gets right and B gets wrong; ``c``: the reverse. Under H0 (equal accuracy)
    each of the ``b + c`` discordant images is equally likely to go either way.
    """

    n: int  # images
    both_right: int
    b: int  # A right, B wrong
    c: int  # A wrong, B right
    both_wrong: int
    p_exact: float  # two-sided exact binomial test on the discordant pairs
    chi2: float  # (|b - c| - 1)^2 / (b + c), continuity corrected (Edwards)
    p_chi2: float
    method: str  # which p-value is `p_value`

    @property
    def p_value(self) -> float:
        return self.p_exact if self.method == "exact" else self.p_chi2

    def to_dict(self) -> dict[str, float | int | str]:
        return {**asdict(self), "p_value": self.p_value}


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray, method: str = "exact") -> McNemar:
    """McNemar's test from per-image correctness (bool arrays ``[N]``) of two models.

    ``method`` picks the reported ``p_value``: ``exact`` (binomial, valid for any count; default)
    or ``chi2`` (the continuity-corrected chi-squared approximation, fine once b + c >= 25).
    Both p-values are always computed.
    """
    from scipy.stats import binom, chi2

    if method not in ("exact", "chi2"):
        raise ConfigError(f"McNemar method {method!r} must be exact or chi2")
    ra, rb = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if ra.shape != rb.shape or ra.ndim != 1:
        raise ConfigError(f"McNemar needs paired predictions on the same images (shapes {ra.shape} vs {rb.shape})")
    b, c = int((ra & ~rb).sum()), int((~ra & rb).sum())
    d = b + c
    if d == 0:  # the models never disagree: no evidence of any difference
        p_exact, stat, p_chi = 1.0, 0.0, 1.0
    else:
        p_exact = min(1.0, 2.0 * float(binom.cdf(min(b, c), d, 0.5)))
        stat = (abs(b - c) - 1) ** 2 / d if abs(b - c) >= 1 else 0.0
        p_chi = float(chi2.sf(stat, 1))
    return McNemar(
        int(ra.size), int((ra & rb).sum()), b, c, int((~ra & ~rb).sum()), p_exact, float(stat), p_chi, method
    )


def format_p(p: float) -> str:
    """A p-value for people: 3 significant digits; below double precision, '< 1e-300' (not 0)."""
    return "< 1e-300" if p < 1e-300 else f"{p:.3g}"


def majority_vote(probs: np.ndarray) -> np.ndarray:
    """Per-image majority vote of several models' predictions: ``probs [S, N, C]`` -> labels ``[N]``.

    Each of the S models votes for its argmax; ties go to the tied class with the highest mean
    probability. With S = 1 this is that model's own prediction.
    """
    p = np.asarray(probs, dtype=np.float64)
    s, n, c = p.shape
    votes = np.zeros((n, c))
    np.add.at(votes, (np.arange(n)[None, :].repeat(s, 0), p.argmax(2)), 1.0)  # [N, C] vote counts
    # mean probability < 1 breaks ties between equal vote counts without overturning a vote
    return (votes + p.mean(0) * 0.5).argmax(1)
