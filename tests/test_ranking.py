"""Rank metrics against hand-counted cases (and scipy-compatible tau-b with ties)."""

import numpy as np
import pytest

from acompress import ranking


def test_kendall_tau_perfect_reversed_and_hand_counted():
    assert ranking.kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert ranking.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # pairs: (1,2)+ (1,3)+ (1,4)+ (2,3)- (2,4)+ (3,4)+ -> (5 - 1) / 6
    assert ranking.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)


def test_kendall_tau_b_with_ties_matches_definition():
    x = np.array([1, 1, 2, 3])
    y = np.array([1, 2, 2, 3])
    # pairs: (0,1) tie x; (0,2)+; (0,3)+; (1,2) tie y; (1,3)+; (2,3)+ -> C=4, D=0, tx=1, ty=1
    assert ranking.kendall_tau(x, y) == pytest.approx(4 / np.sqrt(5 * 5))


def test_kendall_tau_undefined_cases():
    assert ranking.kendall_tau([1], [2]) is None
    assert ranking.kendall_tau([1, 1, 1], [1, 2, 3]) is None
    with pytest.raises(ValueError):
        ranking.kendall_tau([1, 2], [1, 2, 3])


def test_kendall_tau_blocks_agree_with_small_case(monkeypatch):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=300), rng.normal(size=300)
    whole = ranking.kendall_tau(x, y)
    monkeypatch.setattr(ranking, "_BLOCK", 7)
    assert ranking.kendall_tau(x, y) == pytest.approx(whole)


def test_pairwise_accuracy_counts_prediction_ties_as_half():
    assert ranking.pairwise_accuracy([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert ranking.pairwise_accuracy([3, 2, 1], [1, 2, 3]) == pytest.approx(0.0)
    assert ranking.pairwise_accuracy([1, 1, 1], [1, 2, 3]) == pytest.approx(0.5)


def test_binned_tau_separates_size_from_quality():
    # Accuracy grows with size across bins, but inside each bin the predictor ranks by quality.
    size = np.repeat(np.arange(5), 4).astype(float)
    quality = np.tile([0.0, 0.1, 0.2, 0.3], 5)
    accuracy = size + quality
    by_size_only = ranking.binned_tau(size, accuracy, size, bins=5)
    by_quality = ranking.binned_tau(quality, accuracy, size, bins=5)
    assert by_size_only["mean"] is None or by_size_only["mean"] == pytest.approx(0.0)
    assert by_quality["mean"] == pytest.approx(1.0)
    assert sum(b["count"] for b in by_quality["bins"]) == 20


def test_r_squared():
    assert ranking.r_squared([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert ranking.r_squared([2, 2, 2], [1, 2, 3]) == pytest.approx(0.0)
    assert ranking.r_squared([1, 1], [1, 1]) is None


def test_kendall_tau_equals_scipys_tau_b_on_random_data_with_ties():
    scipy_stats = pytest.importorskip("scipy.stats")  # installed with scikit-learn
    rng = np.random.RandomState(0)
    for size in (2, 5, 17, 200, 1500):
        x = rng.randint(0, max(2, size // 3), size).astype(float)  # many ties
        y = x + rng.normal(scale=2.0, size=size)
        y[:: 7] = np.round(y[:: 7])
        expected = scipy_stats.kendalltau(x, y).statistic
        got = ranking.kendall_tau(x, y)
        if np.isnan(expected):
            assert got is None
        else:
            assert got == pytest.approx(expected, abs=1e-12)
