"""Model-service logic without Serve: request decoding, batching split, responses."""
from __future__ import annotations

import numpy as np
import pytest

from protos.evtwin.v1 import prediction_pb2
from serving.deployments import (
    RequestError,
    decode_rows,
    demo_models,
    predict_risk,
    predict_severity,
    risk_response,
    row_answers,
    severity_response,
    split_answer,
)


@pytest.fixture(scope="module")
def models():
    return demo_models(n_features=8, rows=600)


def test_rows_decode_row_major(models) -> None:
    failure, _ = models
    X = np.arange(16, dtype=np.float32).reshape(2, 8)
    request = prediction_pb2.PredictRequest(feature_names=failure.feature_names, vehicle_ids=["a", "b"],
                                            values=X.ravel().tolist())
    np.testing.assert_array_equal(decode_rows(request, failure.feature_names), X)


@pytest.mark.parametrize("request_kwargs, message", [
    ({"feature_names": ["nope"] * 8, "values": [0.0] * 8}, "feature_names"),
    ({"values": [0.0] * 9}, "multiple"),
    ({"values": [0.0] * 16, "vehicle_ids": ["a"]}, "vehicle_ids"),
])
def test_bad_requests_are_refused_with_a_reason(models, request_kwargs, message) -> None:
    with pytest.raises(RequestError, match=message):
        decode_rows(prediction_pb2.PredictRequest(**request_kwargs), models[0].feature_names)


def test_batched_answers_split_back_exactly(models) -> None:
    failure, _ = models
    rng = np.random.default_rng(0)
    parts = [rng.normal(size=(n, 8)).astype(np.float32) for n in (3, 1, 5)]
    whole = predict_risk(failure, np.concatenate(parts), top_k=2)
    for part, answer in zip(parts, split_answer(whole, [3, 1, 5]), strict=False):
        alone = predict_risk(failure, part, top_k=2)
        np.testing.assert_allclose(answer["risk"], alone["risk"], rtol=1e-6)
        assert answer["contributions"] == alone["contributions"]
    assert whole["horizons"] == [7, 14, 30] and whole["risk"].shape == (9, 3)
    assert ((whole["risk"] >= 0) & (whole["risk"] <= 1)).all()


def test_responses_carry_packed_rows(models) -> None:
    failure, severity = models
    X = np.random.default_rng(1).normal(size=(4, 8)).astype(np.float32)
    risk = predict_risk(failure, X, top_k=3)
    response = risk_response(risk)
    assert len(response.risk) == 12 and list(response.horizons_days) == [7, 14, 30]
    assert len(response.contributions) == 12 and {c.row for c in response.contributions} == {0, 1, 2, 3}
    sev = predict_severity(severity, X)
    response = severity_response(sev)
    assert len(response.probabilities) == 12 and set(response.severity) <= {1, 2, 3}
    risks, modes, contributions, levels = row_answers(risk, sev)
    assert set(risks[0]) == {7, 14, 30} and modes == [None] * 4 and len(contributions[0]) == 3
    assert levels == list(response.severity)


def test_empty_request_gives_an_empty_answer(models) -> None:
    answer = predict_risk(models[0], np.zeros((0, 8), dtype=np.float32), top_k=3)
    assert answer["risk"].shape == (0, 3) and answer["contributions"] == []


class ModeModel:
    """Like training.artifacts.FailureModel: per-mode risk nested per horizon."""

    feature_names = ("a", "b")

    def predict(self, X):
        return {7: np.full(len(X), 0.2), 30: np.full(len(X), 0.6)}

    def predict_modes(self, X):
        return {7: {"coolant_pump": np.full(len(X), 0.15), "brake_wear": np.full(len(X), 0.05)},
                30: {"coolant_pump": np.full(len(X), 0.5), "brake_wear": np.full(len(X), 0.1)}}

    def contributions(self, X, top_k):
        return [[("a", 1.0)][:top_k] for _ in range(len(X))]


def test_per_mode_risk_is_reported_at_the_shortest_horizon() -> None:
    answer = predict_risk(ModeModel(), np.zeros((2, 2), dtype=np.float32), top_k=1)
    assert answer["modes"] == ["brake_wear", "coolant_pump"]
    np.testing.assert_allclose(answer["mode_risk"], [[0.05, 0.15], [0.05, 0.15]])
    risks, modes, _, _ = row_answers(answer, None)
    assert modes == ["coolant_pump", "coolant_pump"] and risks[0] == {7: pytest.approx(0.2), 30: pytest.approx(0.6)}
