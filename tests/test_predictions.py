"""One prediction path: training.predictions against the models called directly, the Serve answers
(serving.deployments.row_answers) equal to the in-process ones, and a TwinHost with a LocalPredictor."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from configs.frames import FrameBatch
from configs.settings import load_config
from serving.deployments import (
    BoosterFailureModel,
    demo_models,
    predict_risk,
    predict_severity,
    row_answers,
)
from training.features import FEATURE_NAMES
from training.predictions import most_likely_modes, predict_rows
from twins.host import HostSettings, TwinHost
from twins.predictor import LocalPredictor
from twins.synthetic import synthetic_frames

MODES = ("brake_wear", "coolant_pump", "hv_isolation")


class ModeFailureModel(BoosterFailureModel):
    """Demo boosters plus per-mode risk (nested per horizon, as training.artifacts gives it) that varies by row,
    so different rows have different most likely modes."""

    def predict_modes(self, X: np.ndarray) -> dict[int, dict[str, np.ndarray]]:
        z = np.clip(np.stack([X[:, 0], X[:, 1], -X[:, 0]], axis=1), -30, 30)  # twin features are on raw scales
        share = np.exp(z)
        share /= share.sum(axis=1, keepdims=True)
        return {h: {m: p * share[:, k] for k, m in enumerate(MODES)} for h, p in self.predict(X).items()}


@pytest.fixture(scope="module")
def models() -> tuple[ModeFailureModel, object]:
    failure, severity = demo_models(rows=600, seed=3, feature_names=FEATURE_NAMES)
    return ModeFailureModel(failure.boosters, failure.feature_names), severity


def _direct(failure: ModeFailureModel, severity: object, X: np.ndarray, top_k: int) -> dict[str, list]:
    """The answers computed straight from the models, without training.predictions."""
    by_horizon = failure.predict(X)
    shortest = min(by_horizon)
    per_mode = failure.predict_modes(X)[shortest]
    modes = [max(MODES, key=lambda m: per_mode[m][i]) for i in range(X.shape[0])]
    levels = [int(np.argmax(p)) + 1 for p in severity.predict_proba(X)]
    risk = [{h: float(p[i]) for h, p in by_horizon.items()} for i in range(X.shape[0])]
    return {"risk": risk, "mode": modes, "severity": levels, "contributions": failure.contributions(X, top_k)}


def test_predict_rows_gives_what_the_models_give(models) -> None:
    failure, severity = models
    X = np.random.default_rng(0).normal(size=(40, len(FEATURE_NAMES))).astype(np.float32)
    rows = predict_rows(failure, X, severity, top_k=2)
    expected = _direct(failure, severity, X, 2)
    assert rows.risk == expected["risk"]
    assert rows.mode == expected["mode"] and len(set(rows.mode)) > 1  # the rows disagree on the mode
    assert rows.severity == expected["severity"] and len(set(rows.severity)) > 1
    assert rows.contributions == expected["contributions"] and all(len(c) == 2 for c in rows.contributions)


def test_a_mode_threshold_names_the_mode_only_where_an_alert_may_follow(models) -> None:
    failure, _ = models
    X = np.random.default_rng(1).normal(size=(60, len(FEATURE_NAMES))).astype(np.float32)
    everything = predict_rows(failure, X, top_k=0)
    threshold = float(np.median(failure.predict(X)[7]))
    some = predict_rows(failure, X, top_k=0, mode_threshold=threshold)
    above = failure.predict(X)[7] >= threshold
    assert 0 < above.sum() < len(above)
    assert ([m for m, a in zip(some.mode, above, strict=False) if a]
            == [m for m, a in zip(everything.mode, above, strict=False) if a])
    assert all(m is None for m, a in zip(some.mode, above, strict=False) if not a)
    assert some.risk == everything.risk and some.contributions == [[]] * 60 and some.severity == [None] * 60


def test_the_serve_answers_and_the_in_process_answers_are_the_same(models) -> None:
    failure, severity = models
    X = np.random.default_rng(2).normal(size=(25, len(FEATURE_NAMES))).astype(np.float32)
    risks, modes, contributions, levels = row_answers(predict_risk(failure, X, 3), predict_severity(severity, X))
    local = predict_rows(failure, X, severity, top_k=3)
    assert modes == local.mode and levels == local.severity and contributions == local.contributions
    for served, here in zip(risks, local.risk, strict=False):
        assert served == pytest.approx(here, rel=1e-6)  # Serve ships float32


def test_mode_selection_refuses_a_matrix_that_does_not_fit_the_names() -> None:
    assert most_likely_modes(["a", "b"], np.array([[0.1, 0.1], [0.0, 0.2]])) == ["a", "b"]  # a tie: the first
    with pytest.raises(ValueError, match="expected \\(rows, 2\\)"):
        most_likely_modes(["a", "b"], np.zeros((3, 3)))


def test_local_predictor_refuses_what_is_not_models() -> None:
    with pytest.raises(TypeError, match="run directory or a"):
        LocalPredictor(None)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        LocalPredictor("/nonexistent/run")


class RecordingPredictor(LocalPredictor):
    """Remembers the features of every request (vehicle, window end) it answered."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.asked: dict[tuple[str, int], np.ndarray] = {}

    def submit(self, vehicle_ids: list[str], window_end_ms: list[int], X: np.ndarray):
        self.asked.update({(v, int(t)): X[i].copy() for i, (v, t) in enumerate(zip(vehicle_ids, window_end_ms, strict=False))})
        return super().submit(vehicle_ids, window_end_ms, X)


def test_a_twin_host_with_a_local_predictor_applies_the_models_answers(models, tmp_path: Path) -> None:
    failure, severity = models
    cfg = load_config(overrides=["twins.baseline_warmup_windows=5", "twins.prediction_interval_minutes=20",
                                 "twins.risk_alert_threshold=0.05"]).twins
    window_ms = 600_000
    predictor = RecordingPredictor((failure, severity), top_k=3)
    host = TwinHost(HostSettings(twins=cfg, window_ms=window_ms, stride_ms=window_ms,
                                 checkpoint_uri=str(tmp_path / "ckpt")), predictor=predictor)
    vehicles = [f"v{i}" for i in range(6)]
    alerts = []
    for poll in range(4):
        parts = [synthetic_frames(v, 120, seed=poll % 2, start_seq=1 + 120 * poll) for v in vehicles]
        columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        columns["vehicle_id"] = np.repeat(np.array(vehicles, dtype=object), 120)
        block, rejected = FrameBatch.from_columns(columns)
        assert not rejected
        alerts += host.ingest(block).alerts
        alerts += host.drain(1.0)
    assert len(predictor.asked) > len(vehicles) and host.predictions_answered == predictor.rows_answered
    for vehicle_id in vehicles:  # the last answer each twin holds is the models' answer to its last request
        twin = host.twins[vehicle_id]
        X = predictor.asked[(vehicle_id, twin.schedule.risk_window_end)][None, :]
        assert twin.schedule.risk == _direct(failure, severity, X, 3)["risk"][0]
    risky = [a for a in alerts if a.rule == "failure_risk"]
    assert {a.vehicle_id for a in risky} == set(vehicles)
    for alert in risky:
        expected = _direct(failure, severity, predictor.asked[(alert.vehicle_id, alert.ts_ms)][None, :], 3)
        assert alert.risk == expected["risk"][0]
        assert alert.mode == expected["mode"][0] and alert.severity == expected["severity"][0]
        assert list(alert.signals) == [(f, pytest.approx(v)) for f, v in expected["contributions"][0]]
