"""Losses, class weights and metrics shared by the classification models.

Shapes: B batch, K classes; logits [B, K], targets and predictions [B] int64 class ids.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.classification import (
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)


def focal_loss(logits: Tensor, target: Tensor, gamma: float) -> Tensor:
    """Mean of -(1 - p_t)^gamma log p_t (Lin et al. 2017); gamma = 0 is cross-entropy.

    Down-weights the examples the model already gets right, so the rare classes' hard
    examples dominate the gradient without hand-set class weights.
    """
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)  # [B] log p_t
    # -expm1(log p) is 1 - p without the cancellation of 1 - exp(log p) for confident examples.
    one_minus_p = -torch.expm1(log_p)
    return -(one_minus_p**gamma * log_p).mean()


def inverse_frequency_weights(labels: Tensor, num_classes: int, cap: float) -> Tensor:
    """[K] weights n / (K * n_k), capped at `cap`; a class absent from `labels` gets `cap`.

    A balanced label set gets all ones; the cap keeps a class seen a handful of times from
    dominating the loss with noisy gradients.
    """
    counts = torch.bincount(labels, minlength=num_classes).double()
    weights = labels.numel() / (num_classes * counts)  # inf for absent classes, clamped below
    return weights.clamp(max=cap).float()


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """[K, K] int64 counts, rows the true class and columns the predicted one (sklearn's layout)."""
    return multiclass_confusion_matrix(pred, target, num_classes)


def macro_f1(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Mean F1 over the classes present in `target` or `pred`, as sklearn's f1_score(average="macro").

    Classes absent from both are left out rather than counted as 0 (torchmetrics' macro
    average does so): in a small batch they are usually just not sampled.
    """
    return multiclass_f1_score(pred, target, num_classes, average="macro", zero_division=0).float()


def classification_scores(pred: Tensor, target: Tensor, num_classes: int) -> dict:
    """Per-class precision, recall, F1 and support, their macro means, accuracy and the confusion
    matrix of predictions against targets ([N] class ids each), as plain lists.

    An undefined ratio (no prediction of a class, or no example of it) is 0, and the macro
    means run over all K classes, as sklearn's precision_recall_fscore_support with
    labels=range(K) and zero_division=0.
    """
    per_class = {
        name: score(pred, target, num_classes, average=None, zero_division=0).double()
        for name, score in (("precision", multiclass_precision), ("recall", multiclass_recall),
                            ("f1", multiclass_f1_score))
    }
    matrix = confusion_matrix(pred, target, num_classes)
    total = int(matrix.sum())
    return {
        "samples": total,
        "accuracy": float(matrix.diagonal().sum() / max(total, 1)),
        "per_class": {**{name: values.tolist() for name, values in per_class.items()},
                      "support": [int(n) for n in matrix.sum(1)]},
        "macro": {name: float(values.mean()) for name, values in per_class.items()},
        "confusion_matrix": matrix.tolist(),  # rows: true class, columns: predicted class
    }
