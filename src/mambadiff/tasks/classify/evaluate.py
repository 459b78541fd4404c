"""Scoring a classifier on an encoded dataset: logits in dataset order (`predict`) and accuracy,
macro-F1, confusion matrix and loss (`evaluate_classifier`).

Glossary: b batch, c classes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mambadiff.data.classification import ClassificationDataset
from mambadiff.models.classifier import SequenceClassifier


def _batches_by_length(dataset: ClassificationDataset, batch_size: int):
    """Index batches in length order (little padding); predictions are put back in dataset order."""
    order = sorted(range(len(dataset)), key=lambda i: len(dataset.token_ids[i]))
    for i in range(0, len(order), batch_size):
        yield order[i:i + batch_size]


@torch.no_grad()
def predict(model: SequenceClassifier, dataset: ClassificationDataset, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, c) float32 in dataset order, labels (N,))."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    n = len(dataset)
    logits = torch.zeros(n, model.cfg.num_classes)
    labels = torch.tensor(dataset.labels, dtype=torch.long)
    try:
        for idx in _batches_by_length(dataset, batch_size):
            batch = dataset.collate([dataset[i] for i in idx])
            out = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))  # (b, c)
            logits[torch.as_tensor(idx)] = out.float().cpu()
    finally:
        model.train(was_training)
    return logits, labels


def evaluate_classifier(model: SequenceClassifier, dataset: ClassificationDataset, batch_size: int = 256,
                        label_names: list[str] | None = None) -> dict:
    """{accuracy, macro_f1, confusion_matrix (rows true, columns predicted), n, loss, labels, per_class}."""
    from mambadiff.metrics.classification import classification_metrics
    if len(dataset) == 0:
        raise ValueError("evaluate_classifier: the dataset is empty")
    logits, labels = predict(model, dataset, batch_size)
    k = model.cfg.num_classes
    out = classification_metrics(labels.tolist(), logits.argmax(-1).tolist(), labels=list(range(k)))
    out["loss"] = float(F.cross_entropy(logits, labels))
    if label_names is not None and len(label_names) == k:
        out["label_names"] = list(label_names)
    return out
