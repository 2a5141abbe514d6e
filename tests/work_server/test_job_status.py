"""The operator API's job models: ``RoundMetrics`` shares its metric fields with the
evaluation, and its JSON keeps the keys (and their order) it always had."""

from __future__ import annotations

from work_server.job_status import RoundMetrics
from work_server.ml.evaluate import METRIC_KEYS, Evaluation, EvaluationMetrics

ROUND = {
    "round": 3,
    "accuracy": 0.9,
    "loss": 0.3,
    "precision_macro": 0.8,
    "recall_macro": 0.7,
    "f1_macro": 0.75,
    "roc_auc_macro": 0.95,
    "average_precision_macro": 0.85,
    "results_success": 4,
    "results_error": 1,
    "results_no_reply": 0,
    "duration_s": 12.5,
}


def test_round_metrics_json_is_unchanged() -> None:
    m = RoundMetrics.model_validate(ROUND)
    assert list(m.model_dump(mode="json")) == list(ROUND)  # same keys, same order
    assert RoundMetrics.model_validate_json(m.model_dump_json()) == m


def test_round_metrics_derive_from_the_evaluation_metrics() -> None:
    assert issubclass(RoundMetrics, EvaluationMetrics)
    assert issubclass(Evaluation, EvaluationMetrics)
    assert tuple(EvaluationMetrics.model_fields) == METRIC_KEYS
    assert set(METRIC_KEYS) < set(RoundMetrics.model_fields)
    evaluation = Evaluation(**{k: ROUND[k] for k in METRIC_KEYS}, confusion_matrix=[[1, 0], [0, 1]])
    assert evaluation.metrics() == {k: float(ROUND[k]) for k in METRIC_KEYS}
    rebuilt = RoundMetrics(
        **evaluation.metrics(),
        **{k: v for k, v in ROUND.items() if k not in METRIC_KEYS},
    )
    assert rebuilt == RoundMetrics.model_validate(ROUND)
