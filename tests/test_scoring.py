import numpy as np
import pytest
from sklearn import metrics as skm

from research import scoring
from research.errors import InputError
from research.metrics import classification_metrics


def test_thresholds_by_hand():
    e = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    assert scoring.threshold(e, "mean_std", k=2) == pytest.approx(e.mean() + 2 * e.std())
    assert scoring.threshold(e, "percentile", percentile=50) == pytest.approx(3.0)
    assert scoring.threshold(e, "percentile", percentile=95) == pytest.approx(np.percentile(e, 95))
    # median 3, |e - 3| = [2, 1, 0, 1, 97] -> MAD 1; robust to the outlier
    assert scoring.threshold(e, "median_mad", k=3) == pytest.approx(3 + 3 * 1.4826)
    with pytest.raises(InputError, match="threshold.method"):
        scoring.threshold(e, "max")
    with pytest.raises(InputError, match="no errors"):
        scoring.threshold(np.array([]), "percentile")


def test_ensemble_scores_mean_and_spread():
    member = np.array([[1.0, 2.0], [3.0, 2.0]])
    mean, spread = scoring.ensemble_scores(member)
    np.testing.assert_allclose(mean, [2.0, 2.0])
    np.testing.assert_allclose(spread, [1.0, 0.0])


def test_metrics_against_sklearn_and_hand_counts():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    scores = rng.normal(size=500) + 1.5 * labels
    thr = 0.7
    m = classification_metrics(labels, scores, thr)
    pred = scores > thr
    tp = int((pred & (labels == 1)).sum()); fp = int((pred & (labels == 0)).sum())
    fn = int((~pred & (labels == 1)).sum()); tn = int((~pred & (labels == 0)).sum())
    assert m["confusion"] == [[tn, fp], [fn, tp]]
    assert m["precision"] == pytest.approx(tp / (tp + fp))
    assert m["recall"] == pytest.approx(tp / (tp + fn))
    assert m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, scores))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(labels, scores))
    assert 0.8 < m["roc_auc"] < 0.95


def test_complexity_normalisation_by_hand():
    signals = np.array([[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 2.0]])  # |diff| means: 1, 2/3
    np.testing.assert_allclose(scoring.complexity(signals), [1.0, 2 / 3])
    image = np.array([[[0.0, 1.0], [1.0, 1.0]]])  # rows: |0-1|, |1-1| -> 0.5; columns: |1-0|, |1-1| -> 0.5
    np.testing.assert_allclose(scoring.complexity(image), [1.0])
    errors = np.array([[2.0, 2.0], [4.0, 1.0]])  # (members, samples)
    np.testing.assert_allclose(scoring.normalize(errors, signals, "tv"), errors / (np.array([1.0, 2 / 3]) + 1e-6))
    np.testing.assert_array_equal(scoring.normalize(errors, signals, "none"), errors)
    with pytest.raises(InputError, match="score.normalize"):
        scoring.normalize(errors, signals, "l2")
