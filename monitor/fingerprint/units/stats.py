"""Null distributions and combination rules for the unit-matching test, in log space.

A p-value below 1e-300 is ordinary here (a copied model gives thousands of near-exact unit
matches), so everything is computed as log10 p and only turned into a float at the edge.

Per suspect unit: |cos| with its best match among n registered units. Under the null (an
independently initialised model) a unit's feature vector is a direction unrelated to ours; for a
uniformly random direction in k dimensions, P(|cos| >= c) = I_{1-c²}((k-1)/2, 1/2). Taking the
best of n is covered by a Bonferroni factor n. k is the effective dimension of the features
(participation ratio of their covariance), not the nominal one, so concentrated features do not
make chance matches look rare.

Per layer: the median unit, not the best one. Independently trained models on the same data can
learn a few similar units; a copy keeps nearly all of them. The k-th smallest of m uniform
p-values is Beta(k, m-k+1) distributed, so P = I_p(k, m-k+1) for the observed median p.

Across layers: Fisher's method (Zhu et al., "Independence Tests for Language Models", ICML 2025,
combine per-block p-values the same way).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

LOG10_FLOOR = -1e6  # "zero" in log10 space


def log10_betainc(a: float, b: float, x: float) -> float:
    """log10 of the regularized incomplete beta I_x(a, b), accurate deep into the tail."""
    if x <= 0:
        return LOG10_FLOOR
    if x >= 1:
        return 0.0
    value = float(special.betainc(a, b, x))
    if value > 1e-250:
        return math.log10(value)
    # Leading term of the series: I_x(a,b) ≈ x^a (1-x)^b / (a B(a,b)), exact to first order as x→0.
    ln = a * math.log(x) + b * math.log1p(-x) - math.log(a) - float(special.betaln(a, b))
    return ln / math.log(10)


COS_CEILING = 1.0 - 1e-6  # registered features are float16: closer to 1 than this is rounding


def unit_log10_p(cos: float, k_eff: float, n_candidates: int) -> float:
    """log10 p that a random direction gets |cos| >= `cos` with one of n candidates."""
    c = min(abs(cos), COS_CEILING)
    tail = log10_betainc((k_eff - 1) / 2, 0.5, 1.0 - c * c)
    return min(0.0, tail + math.log10(max(n_candidates, 1)))


def median_log10_p(unit_log10_ps: np.ndarray) -> float:
    """log10 p of a layer from the median of its m unit p-values (order statistic of uniforms)."""
    m = len(unit_log10_ps)
    k = (m + 1) // 2
    median = float(np.sort(unit_log10_ps)[k - 1])
    return log10_betainc(k, m - k + 1, 10.0 ** median) if median > -300 else \
        _order_stat_tail(k, m, median)


def _order_stat_tail(k: int, m: int, log10_median: float) -> float:
    """log10 I_p(k, m-k+1) when p itself underflows: ≈ C(m,k) p^k."""
    log10_comb = (math.lgamma(m + 1) - math.lgamma(k + 1) - math.lgamma(m - k + 1)) / math.log(10)
    return min(0.0, log10_comb + k * log10_median)


def fisher_log10_p(log10_ps: list[float]) -> float:
    """Fisher's method: X = -2 Σ ln p ~ χ²(2n) under the null."""
    if not log10_ps:
        return 0.0
    n = len(log10_ps)
    x = -2.0 * math.log(10) * sum(log10_ps)
    sf = float(special.gammaincc(n, x / 2))  # χ²(2n) survival function
    if sf > 1e-250:
        return min(0.0, math.log10(sf))
    # Far tail: Q(n, y) ≈ y^(n-1) e^(-y) / Γ(n) (leading term of its asymptotic series).
    ln_sf = (n - 1) * math.log(x / 2) - x / 2 - math.lgamma(n)
    return min(0.0, ln_sf / math.log(10))


def effective_dim(features: np.ndarray) -> float:
    """Participation ratio (Σλ)²/Σλ² of the feature covariance: 1 ≤ k_eff ≤ k."""
    if len(features) < 2:
        return 1.0
    cov = np.cov(features.astype(np.float64), rowvar=False)
    eig = np.clip(np.linalg.eigvalsh(np.atleast_2d(cov)), 0, None)
    total = eig.sum()
    return float(total * total / (eig * eig).sum()) if total > 0 else 1.0


def bonferroni(log10_p: float, tests: int) -> float:
    return min(0.0, log10_p + math.log10(max(tests, 1)))
