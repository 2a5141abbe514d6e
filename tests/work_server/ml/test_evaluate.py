from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from work_server.ml.datasets import load_dataset
from work_server.ml.evaluate import Evaluation, evaluate
from yadml_trainer.models import initial_state


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _perfect_weights() -> dict[str, torch.Tensor]:
    """A LeNet whose output ignores the input: always predicts class 3 with high confidence."""
    state = {k: torch.zeros_like(v) for k, v in initial_state("lenet", 0).items()}
    state["fc2.bias"][3] = 20.0
    return state


def test_evaluate_untrained_on_digits() -> None:
    ds = load_dataset("digits")
    ev = evaluate("lenet", initial_state("lenet", 0), ds.test_images, ds.test_labels, batch_size=97)
    assert isinstance(ev, Evaluation)
    assert 0 <= ev.accuracy <= 1
    assert ev.loss > 0
    assert math.isfinite(ev.loss)
    assert 0 <= ev.roc_auc_macro <= 1
    assert 0 <= ev.average_precision_macro <= 1
    cm = np.array(ev.confusion_matrix)
    assert cm.shape == (10, 10)
    assert cm.sum() == len(ds.test_labels)
    np.testing.assert_array_equal(cm.sum(axis=1), np.bincount(ds.test_labels, minlength=10))
    assert math.isclose(ev.accuracy, np.trace(cm) / cm.sum())
    metrics = ev.metrics()
    assert set(metrics) == {
        "accuracy",
        "loss",
        "precision_macro",
        "recall_macro",
        "f1_macro",
        "roc_auc_macro",
        "average_precision_macro",
    }
    assert all(isinstance(v, float) for v in metrics.values())


def test_constant_prediction_metrics() -> None:
    images = np.zeros((20, 28, 28), np.uint8)
    labels = np.array([3] * 5 + [1] * 15, dtype=np.int64)
    ev = evaluate("lenet", _perfect_weights(), images, labels)
    assert ev.accuracy == pytest.approx(0.25)
    assert ev.confusion_matrix[3][3] == 5
    assert ev.confusion_matrix[1][3] == 15
    # Constant scores: every ROC AUC is 0.5.
    assert ev.roc_auc_macro == pytest.approx(0.5)
    assert ev.loss == pytest.approx((15 * 20) / 20, rel=1e-3)


def test_absent_classes_and_single_class_do_not_crash() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    weights = initial_state("lenet", 1)
    ev = evaluate("lenet", weights, images, np.array([0, 1] * 6))
    assert 0 <= ev.roc_auc_macro <= 1
    single = evaluate("lenet", weights, images, np.full(12, 7))
    assert single.roc_auc_macro == 0.5
    assert 0 <= single.average_precision_macro <= 1
    assert sum(map(sum, single.confusion_matrix)) == 12


def test_evaluate_rejects_bad_inputs() -> None:
    weights = initial_state("lenet", 0)
    images = np.zeros((2, 28, 28), np.uint8)
    with pytest.raises(ValueError, match=r"labels outside 0\.\.9"):
        evaluate("lenet", weights, images, np.array([0, 10]))
    with pytest.raises(ValueError, match=r"N labels, got \(2, 28, 28\) and \(1,\)"):
        evaluate("lenet", weights, images, np.array([0]))
    with pytest.raises(ValueError, match=r"need N >= 1 images .* got \(0, 28, 28\)"):
        evaluate("lenet", weights, images[:0], np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="weights do not fit model 'lenet'"):
        evaluate("lenet", {"x": torch.zeros(1)}, images, np.array([0, 1]))
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        evaluate("nope", weights, images, np.array([0, 1]))
