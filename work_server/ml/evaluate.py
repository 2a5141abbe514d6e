"""Evaluate a model's weights on a labelled image set (the server's per-round test metrics).

Metrics (all macro averages are unweighted means over classes):

* ``accuracy`` and ``loss`` (mean negative log-likelihood of the true class).
* ``precision_macro``, ``recall_macro``, ``f1_macro``: scikit-learn, ``zero_division=0``,
  over the classes present in the labels or the predictions.
* ``roc_auc_macro``: one-vs-rest ROC AUC of the softmax probabilities, averaged over the
  classes that are present in the labels and not the only class present (a class with no
  positives or no negatives has no ROC curve). 0.5 when no class qualifies.
* ``average_precision_macro``: one-vs-rest average precision, averaged over the classes
  present in the labels.
* ``confusion_matrix``: ``num_classes x num_classes`` counts, rows = true, columns = predicted.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from yadml_common.wire import WireModel
from yadml_trainer.models import build_model, normalize_images

__all__ = ["METRIC_KEYS", "Evaluation", "EvaluationMetrics", "evaluate", "predict_log_proba"]


class EvaluationMetrics(WireModel):
    """The scalar metrics of an evaluation: a round's ``metrics`` column, and the metrics part
    of the API's ``RoundMetrics`` (``work_server.job_status``), which derives from this."""

    accuracy: float
    loss: float
    precision_macro: float
    recall_macro: float
    f1_macro: float
    roc_auc_macro: float
    average_precision_macro: float


#: the names of the scalar metrics, in order
METRIC_KEYS: tuple[str, ...] = tuple(EvaluationMetrics.model_fields)


class Evaluation(EvaluationMetrics):
    confusion_matrix: list[list[int]]

    def metrics(self) -> dict[str, float]:  # keys: METRIC_KEYS
        """Every metric but the confusion matrix."""
        return {k: float(getattr(self, k)) for k in METRIC_KEYS}


def predict_log_proba(
    model: torch.nn.Module, images: np.ndarray, *, batch_size: int = 1000
) -> torch.Tensor:
    """Log-probabilities ``[N, C]`` (float32) of a log-softmax model on uint8 images."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    model.eval()
    outputs: list[torch.Tensor] = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.array(images[start : start + batch_size], dtype=np.uint8))
            outputs.append(model(normalize_images(batch)))
    return torch.cat(outputs)


def _ovr_macro(labels: np.ndarray, probs: np.ndarray, *, auc: bool) -> float:
    scores: list[float] = []
    for c in range(probs.shape[1]):
        positives = labels == c
        n_pos = int(positives.sum())
        if n_pos == 0 or (auc and n_pos == len(labels)):
            continue
        metric = roc_auc_score if auc else average_precision_score
        scores.append(float(metric(positives, probs[:, c])))
    if not scores:
        return 0.5 if auc else 0.0
    return float(np.mean(scores))


def evaluate(
    model_name: str,
    weights: Mapping[str, torch.Tensor],
    images: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int = 10,
    batch_size: int = 1000,
) -> Evaluation:
    """Load ``weights`` into a fresh ``model_name`` and compute the test metrics."""
    labels = np.asarray(labels)
    if images.ndim not in (3, 4) or len(images) != len(labels) or len(labels) == 0:
        raise ValueError(
            f"need N >= 1 images [N, 28, 28] and N labels, got {images.shape} and {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels outside 0..{num_classes - 1}")

    model = build_model(model_name)
    try:
        model.load_state_dict(dict(weights), strict=True)
    except RuntimeError as exc:
        raise ValueError(f"weights do not fit model {model_name!r}: {exc}") from None
    log_probs = predict_log_proba(model, images, batch_size=batch_size)
    if log_probs.shape[1] != num_classes:
        raise ValueError(f"model has {log_probs.shape[1]} outputs, expected {num_classes}")
    target = torch.from_numpy(labels)
    loss = float(torch.nn.functional.nll_loss(log_probs.double(), target, reduction="mean"))
    preds = log_probs.argmax(dim=1).numpy()
    probs = torch.softmax(log_probs.double(), dim=1).numpy()

    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, preds, average="macro", zero_division=0
    )
    cm = confusion_matrix(labels, preds, labels=np.arange(num_classes))
    return Evaluation(
        accuracy=float((preds == labels).mean()),
        loss=loss,
        precision_macro=float(precision),
        recall_macro=float(recall),
        f1_macro=float(f1),
        roc_auc_macro=_ovr_macro(labels, probs, auc=True),
        average_precision_macro=_ovr_macro(labels, probs, auc=False),
        confusion_matrix=[[int(v) for v in row] for row in cm],
    )
