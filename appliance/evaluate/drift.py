"""Drift statistics: is the current window of answers unlike the reference window?

On query embeddings, the maximum mean discrepancy (MMD) with an RBF kernel whose bandwidth is
the median pairwise distance, and a permutation test (alibi-detect's detector), optionally with a
domain classifier's AUC (> 0.55 drifts, Evidently's default). On scalar signals,
`scipy.stats.ks_2samp` (Fisher's exact test for yes/no signals, where KS has no power) and the
population stability index over ten quantile bins of the reference.

A signal drifts when its shift is both significant (p < 0.05) and large: MMD^2 at least 0.005
for embeddings (about a tenth of a window's queries on a new topic), PSI above 0.2 for continuous
signals. Significance alone raises a false alarm in one check out of twenty by construction, and
more when every check reuses one unlucky reference window (measured: up to 5 in 20); a large
effect alone is noise on small windows (PSI's expectation without drift is about bins/n). A
yes/no signal (refusals, thumbs down) drifts on significance alone: its PSI is small even when a
rate doubles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PSI_BINS = 10
# Proportions of empty bins are floored at this, so the PSI of a bin that empties is large, not infinite.
PSI_FLOOR = 1e-4


@dataclass(frozen=True, slots=True)
class Thresholds:
    p_value: float = 0.05
    psi: float = 0.2
    mmd2: float = 0.005
    auc: float = 0.55
    min_samples: int = 30
    permutations: int = 200
    classifier: bool = False


@dataclass(frozen=True, slots=True)
class SignalTest:
    """One signal compared between two windows (the fields of records.DriftSignal)."""

    signal: str
    test: str
    statistic: float | None
    p_value: float | None
    psi: float | None
    auc: float | None
    reference_n: int
    current_n: int
    reference_mean: float | None
    current_mean: float | None
    drifted: bool
    note: str


def sample(n: int, at_most: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of at most `at_most` of `n` items, drawn without replacement, in order."""
    if n <= at_most:
        return np.arange(n)
    return np.sort(rng.choice(n, size=at_most, replace=False))


# -- embeddings ------------------------------------------------------------------------------------
def _sq_distances(z: np.ndarray) -> np.ndarray:
    sq = np.einsum("ij,ij->i", z, z)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * (z @ z.T), 0.0)


def rbf_kernel(z: np.ndarray) -> np.ndarray:
    """The RBF kernel matrix of the rows of `z`, bandwidth by the median heuristic:
    k(x, y) = exp(-|x - y|^2 / (2 sigma^2)) with sigma the median pairwise distance."""
    d2 = _sq_distances(z.astype(np.float64))
    off = d2[np.triu_indices_from(d2, k=1)]
    sigma2 = float(np.median(off)) if off.size else 1.0
    if sigma2 <= 0:  # all points equal: any bandwidth gives the same (zero) discrepancy
        sigma2 = 1.0
    return np.exp(-d2 / (2.0 * sigma2))


def _mmd2(kernel: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Unbiased MMD^2 for each row of `masks` (1 marks the first sample), from one kernel matrix.

    With a the indicator of X and b = 1 - a: sum over X pairs is a'Ka minus its diagonal (m ones,
    the RBF kernel being 1 on it), likewise for Y, and the cross term is a'Kb."""
    m = masks.sum(axis=1)
    n = masks.shape[1] - m
    ka = masks @ kernel
    xx = np.einsum("ij,ij->i", ka, masks) - m
    xy = np.einsum("ij,ij->i", ka, 1.0 - masks)
    total = kernel.sum()
    yy = total - 2.0 * xy - (xx + m) - n
    return xx / (m * (m - 1)) + yy / (n * (n - 1)) - 2.0 * xy / (m * n)


def mmd_test(
    reference: np.ndarray, current: np.ndarray, permutations: int = 200, seed: int = 0
) -> tuple[float, float]:
    """MMD^2 of two samples of vectors and its permutation p-value: the share of random splits of
    the pooled sample (and the observed one) whose MMD^2 is at least the observed."""
    pooled = np.vstack([reference, current])
    kernel = rbf_kernel(pooled)
    m, total = len(reference), len(pooled)
    observed = np.zeros((1, total))
    observed[0, :m] = 1.0
    rng = np.random.default_rng(seed)
    shuffled = np.zeros((permutations, total))
    for i in range(permutations):
        shuffled[i, rng.permutation(total)[:m]] = 1.0
    stat = float(_mmd2(kernel, observed)[0])
    null = _mmd2(kernel, shuffled)
    p_value = (1.0 + float(np.sum(null >= stat))) / (1.0 + permutations)
    return stat, p_value


def classifier_auc(reference: np.ndarray, current: np.ndarray, seed: int = 0) -> float | None:
    """Cross-validated ROC AUC of a logistic regression telling the windows apart (0.5: it cannot).
    None when scikit-learn is not installed."""
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import roc_auc_score
        from sklearn.model_selection import StratifiedKFold, cross_val_predict
    except ImportError:
        return None
    x = np.vstack([reference, current])
    y = np.r_[np.zeros(len(reference)), np.ones(len(current))]
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    scores = cross_val_predict(LogisticRegression(max_iter=1000), x, y, cv=folds, method="predict_proba")[
        :, 1
    ]
    return float(roc_auc_score(y, scores))


def embedding_drift(
    reference: np.ndarray, current: np.ndarray, limits: Thresholds, seed: int = 0
) -> SignalTest:
    m, n = len(reference), len(current)
    if min(m, n) < limits.min_samples:
        return _no_verdict("embedding", "mmd", m, n, None, None, limits.min_samples)
    stat, p_value = mmd_test(reference, current, limits.permutations, seed)
    auc = classifier_auc(reference, current, seed) if limits.classifier else None
    significant, large = p_value < limits.p_value, stat >= limits.mmd2
    drifted = (significant and large) or (auc is not None and auc > limits.auc)
    note = (
        f"p={p_value:.3g} {'<' if significant else '>='} {limits.p_value}, "
        f"MMD^2 {stat:.4f} {'>=' if large else '<'} {limits.mmd2}"
    )
    if auc is not None:
        note += f"; classifier AUC {auc:.3f} {'>' if auc > limits.auc else '<='} {limits.auc}"
    return SignalTest("embedding", "mmd", stat, p_value, None, auc, m, n, None, None, drifted, note)


# -- scalar signals --------------------------------------------------------------------------------
def psi(reference: np.ndarray, current: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index: sum of (c - r) * ln(c / r) over the reference's quantile bins
    (ties merge bins: a yes/no signal has two)."""
    edges = np.unique(np.quantile(reference, np.linspace(0.0, 1.0, bins + 1))[1:-1])
    ref = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1)
    cur = np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1)
    r = np.maximum(ref / ref.sum(), PSI_FLOOR)
    c = np.maximum(cur / cur.sum(), PSI_FLOOR)
    return float(np.sum((c - r) * np.log(c / r)))


def scalar_drift(
    signal: str, reference: np.ndarray, current: np.ndarray, limits: Thresholds, binary: bool = False
) -> SignalTest:
    """KS (or, for a yes/no signal, Fisher's exact test) and PSI of one signal; NaNs are left out."""
    from scipy import stats

    reference = reference[~np.isnan(reference)]
    current = current[~np.isnan(current)]
    m, n = len(reference), len(current)
    test = "fisher" if binary else "ks"
    if min(m, n) < limits.min_samples:
        return _no_verdict(signal, test, m, n, reference, current, limits.min_samples)
    if binary:
        table = [
            [int(reference.sum()), m - int(reference.sum())],
            [int(current.sum()), n - int(current.sum())],
        ]
        p_value = float(stats.fisher_exact(table)[1])
        # The change of the rate: more telling to an operator than the odds ratio.
        statistic = float(current.mean() - reference.mean())
    else:
        result = stats.ks_2samp(reference, current)
        statistic, p_value = float(result.statistic), float(result.pvalue)
    index = psi(reference, current)
    significant = p_value < limits.p_value
    if binary:
        drifted = significant
        note = f"p={p_value:.3g} {'<' if significant else '>='} {limits.p_value}"
    else:
        large = index > limits.psi
        drifted = significant and large
        note = (
            f"p={p_value:.3g} {'<' if significant else '>='} {limits.p_value}, "
            f"PSI {index:.3f} {'>' if large else '<='} {limits.psi}"
        )
    return SignalTest(
        signal,
        test,
        float(statistic),
        float(p_value),
        index,
        None,
        m,
        n,
        float(reference.mean()),
        float(current.mean()),
        drifted,
        note,
    )


def _no_verdict(
    signal: str,
    test: str,
    m: int,
    n: int,
    reference: np.ndarray | None,
    current: np.ndarray | None,
    needed: int,
) -> SignalTest:
    def mean(values: np.ndarray | None) -> float | None:
        return float(values.mean()) if values is not None and len(values) else None

    return SignalTest(
        signal,
        test,
        None,
        None,
        None,
        None,
        m,
        n,
        mean(reference),
        mean(current),
        False,
        f"too few answers for a verdict ({m} and {n}; each window needs {needed})",
    )
