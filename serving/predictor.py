"""The twins' predictor on Ray Serve: asks the model deployments (by handle) for risk and severity.

The twins never import this module: ``serving`` injects it when it builds the fleet,
``TwinFleet.create(config, predictor_factory=ServePredictor)`` (the class is the picklable zero-argument
factory each host actor calls), after ``serving.deployments.deploy_models`` has deployed the app.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from serving.deployments import APP_NAME, row_answers
from twins.host import PredictionBatch


class ServePredictor:
    """``twins.host.Predictor`` over the Serve deployments; ``submit`` never waits for the answer."""

    def __init__(self, app_name: str = APP_NAME, top_k: int = 3) -> None:
        from ray import serve

        self.failure = serve.get_deployment_handle("FailurePredictor", app_name=app_name)
        self.severity = serve.get_deployment_handle("SeverityClassifier", app_name=app_name)
        self.top_k = top_k

    def submit(self, vehicle_ids: list[str], window_end_ms: list[int], X: np.ndarray) -> Any:
        return {"failure": self.failure.predict_rows.remote(X, self.top_k),
                "severity": self.severity.severity_rows.remote(X), "answers": {}}

    def poll(self, ticket: Any) -> PredictionBatch | None:
        answers = ticket["answers"]
        for key in ("failure", "severity"):
            if key not in answers:
                try:
                    answers[key] = ticket[key].result(timeout_s=0.001)
                except TimeoutError:
                    return None
        risk, modes, contributions, severity = row_answers(answers["failure"], answers["severity"])
        return PredictionBatch(risk=risk, mode=modes, contributions=contributions, severity=severity)
