"""Detection metrics at a threshold (anomaly = positive class, higher score = more anomalous)."""

from __future__ import annotations

import numpy as np


def classification_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """ROC-AUC, PR-AUC, F1, precision, recall, accuracy and the confusion matrix.

    The confusion matrix is ``[[TN, FP], [FN, TP]]``: rows are the true class (normal, anomaly),
    columns the predicted one.
    """
    from sklearn import metrics as skm  # on first use: its import (scipy.stats) is not needed before training

    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, np.float64)
    pred = (scores > threshold).astype(int)
    both = len(np.unique(labels)) == 2
    out = {
        "roc_auc": float(skm.roc_auc_score(labels, scores)) if both else float("nan"),
        "pr_auc": float(skm.average_precision_score(labels, scores)) if both else float("nan"),
        "f1": float(skm.f1_score(labels, pred, zero_division=0)),
        "precision": float(skm.precision_score(labels, pred, zero_division=0)),
        "recall": float(skm.recall_score(labels, pred, zero_division=0)),
        "accuracy": float(skm.accuracy_score(labels, pred)),
        "confusion": skm.confusion_matrix(labels, pred, labels=[0, 1]).tolist(),
        "n_normal": int((labels == 0).sum()),
        "n_anomaly": int((labels == 1).sum()),
    }
    return out
