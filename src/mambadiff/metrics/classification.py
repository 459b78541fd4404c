"""Classification metrics in plain numpy: accuracy, per-class precision/recall/F1, macro-F1, confusion.

Labels may be ints or strings. The label set is `labels` when given, else the sorted union of the
true and predicted labels. A class's precision (recall) is 0 when it was never predicted (never
true), and its F1 is 0 when precision + recall is 0, as scikit-learn does with zero_division=0.
Macro-F1 is the unweighted mean of the per-class F1 over the label set.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _as_1d(name: str, values) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of labels, got shape {arr.shape}")
    return arr


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t, p = _as_1d("y_true", y_true), _as_1d("y_pred", y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_pred: expected {t.shape[0]} labels (one per y_true), got {p.shape[0]}")
    if t.size == 0:
        raise ValueError("y_true: expected at least one label")
    return t, p


def accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    t, p = _pair(y_true, y_pred)
    return float(np.mean(t == p))


def confusion_matrix(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> tuple[np.ndarray, list]:
    """Counts (k, k): row = true label, column = predicted label, in the order of the returned labels."""
    t, p = _pair(y_true, y_pred)
    if labels is None:
        labels = sorted(set(t.tolist()) | set(p.tolist()))
    labels = list(labels)
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels: expected distinct labels, got {labels}")
    index = {lab: i for i, lab in enumerate(labels)}
    unknown = sorted({str(x) for x in set(t.tolist()) | set(p.tolist()) if x not in index})
    if unknown:
        raise ValueError(f"y_true/y_pred: labels {unknown} are not in labels={labels}")
    m = np.zeros((len(labels), len(labels)), dtype=np.int64)  # (k, k)
    np.add.at(m, (np.array([index[x] for x in t.tolist()]), np.array([index[x] for x in p.tolist()])), 1)
    return m, labels


def per_class_scores(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> dict:
    m, labels = confusion_matrix(y_true, y_pred, labels)
    tp = np.diag(m).astype(np.float64)
    predicted = m.sum(axis=0).astype(np.float64)
    actual = m.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"labels": labels, "precision": precision.tolist(), "recall": recall.tolist(),
            "f1": f1.tolist(), "support": actual.astype(int).tolist()}


def macro_f1(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> float:
    return float(np.mean(per_class_scores(y_true, y_pred, labels)["f1"]))


def classification_metrics(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> dict:
    """accuracy, macro_f1, per-class scores and the confusion matrix, JSON-ready."""
    m, labs = confusion_matrix(y_true, y_pred, labels)
    per = per_class_scores(y_true, y_pred, labs)
    return {"n": int(m.sum()), "accuracy": accuracy(y_true, y_pred), "macro_f1": float(np.mean(per["f1"])),
            "labels": [x if isinstance(x, (int, str)) else str(x) for x in labs],
            "per_class": per, "confusion_matrix": m.tolist()}
