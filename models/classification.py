"""Losses, class weights and metrics shared by the classification models.

Shapes: B batch, K classes; logits [B, K], targets and predictions [B] int64 class ids.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


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
    flat = target * num_classes + pred
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def macro_f1(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Mean F1 over the classes present in `target` or `pred`, as sklearn's f1_score(average="macro").

    Classes absent from both are left out rather than counted as 0: in a small batch they
    are usually just not sampled.
    """
    matrix = confusion_matrix(pred, target, num_classes).double()
    tp = matrix.diagonal()
    errors = matrix.sum(0) + matrix.sum(1) - 2 * tp  # false positives + false negatives
    present = (tp + errors) > 0
    f1 = 2 * tp / (2 * tp + errors).clamp_min(1)
    return f1[present].mean().float()


def report_from_confusion(matrix: Tensor) -> dict:
    """Per-class precision, recall, F1 and support, their macro means, accuracy and the matrix, as plain lists.

    An undefined ratio (no prediction of a class, or no example of it) is 0, and the macro
    means run over all K classes, as sklearn's precision_recall_fscore_support with
    labels=range(K) and zero_division=0.
    """
    matrix = matrix.double()
    tp = matrix.diagonal()
    predicted, support = matrix.sum(0), matrix.sum(1)
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), 0.0)
    recall = torch.where(support > 0, tp / support.clamp_min(1), 0.0)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12), 0.0)
    total = int(matrix.sum())
    return {
        "samples": total,
        "accuracy": float(tp.sum() / max(total, 1)),
        "per_class": {
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "f1": f1.tolist(),
            "support": [int(n) for n in support],
        },
        "macro": {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean())},
        "confusion_matrix": matrix.long().tolist(),  # rows: true class, columns: predicted class
    }
