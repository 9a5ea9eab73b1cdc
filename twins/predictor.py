"""``LocalPredictor``: the ``twins.host.Predictor`` contract answered in this process (tests, the what-if).

It answers with ``training.predictions.predict_rows``, the same per-row answers the Serve deployments
give the twins (``serving.deployments.row_answers``), computed at ``submit``; ``poll`` hands them back at
once, so a host that drains after ingesting applies a prediction in the same step it was asked for.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from training.artifacts import load_failure_model, load_severity_model
from training.predictions import FailureModel, SeverityModel, predict_rows
from twins.host import PredictionBatch


class LocalPredictor:
    """Failure and severity models called in process behind ``submit``/``poll``.

    ``models``: a trained run directory (its failure and severity models are loaded) or a pair
    ``(failure_model, severity_model or None)``. ``top_k`` contributions per row (0: none);
    ``mode_threshold``: see ``training.predictions.predict_rows``.
    """

    def __init__(self, models: str | os.PathLike[str] | tuple[FailureModel, SeverityModel | None], top_k: int = 3,
                 mode_threshold: float | None = None) -> None:
        if isinstance(models, (str, os.PathLike)):
            self.failure_model: FailureModel = load_failure_model(models)
            self.severity_model: SeverityModel | None = load_severity_model(models)
        elif isinstance(models, tuple) and len(models) == 2 and models[0] is not None:
            self.failure_model, self.severity_model = models
        else:
            raise TypeError(f"models must be a run directory or a (failure_model, severity_model) pair, got {models!r}")
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0 (got {top_k})")
        self.top_k = top_k
        self.mode_threshold = mode_threshold
        self.rows_answered = 0

    def submit(self, vehicle_ids: list[str], window_end_ms: list[int], X: np.ndarray) -> PredictionBatch:
        if len(vehicle_ids) != len(window_end_ms) or len(vehicle_ids) != X.shape[0]:
            raise ValueError(f"{len(vehicle_ids)} vehicle_ids, {len(window_end_ms)} window_end_ms and {X.shape[0]} "
                             "rows of X must be as many")
        rows = predict_rows(self.failure_model, X, self.severity_model, self.top_k, self.mode_threshold)
        self.rows_answered += len(vehicle_ids)
        return PredictionBatch(risk=rows.risk, severity=rows.severity, mode=rows.mode,
                               contributions=rows.contributions)

    def poll(self, ticket: Any) -> PredictionBatch:
        return ticket
