"""AUC orientation, one-class errors and the bootstrap interval."""

import numpy as np
import pytest

from dia.metrics import MetricError, bootstrap_auc_ci, compute_auc


def test_auc_orientation():
    labels = [0, 0, 1, 1]
    assert compute_auc(labels, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert compute_auc(labels, [0.9, 0.8, 0.2, 0.1]) == 0.0


def test_one_class_is_a_clear_error_not_nan():
    with pytest.raises(MetricError, match="normal .* and anomalous"):
        compute_auc([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(MetricError, match="NaN"):
        compute_auc([0, 1], [0.1, float("nan")])


def test_bootstrap_matches_sklearn_resamples_and_brackets_the_auc():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(60), np.ones(40)].astype(int)
    scores = np.round(rng.normal(size=100) + labels, 1)  # rounding makes ties
    low, high = bootstrap_auc_ci(labels, scores, num_resamples=2000, seed=0)
    auc = compute_auc(labels, scores)
    assert low < auc < high and high - low < 0.3
    # the rank formula equals sklearn on one resample, ties included
    pos, neg = scores[labels == 1], scores[labels == 0]
    idx_p, idx_n = rng.integers(0, 40, 40), rng.integers(0, 60, 60)
    from scipy.stats import rankdata

    both = np.r_[pos[idx_p], neg[idx_n]]
    ranks = rankdata(both)
    mw = (ranks[:40].sum() - 40 * 41 / 2) / (40 * 60)
    assert mw == pytest.approx(roc_auc_score(np.r_[np.ones(40), np.zeros(60)], both))
