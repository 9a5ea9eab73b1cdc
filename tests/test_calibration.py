"""Isotonic calibration: on its training points it returns the fitted step values (training.calibration)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.optimize import isotonic_regression

from training.calibration import Calibrator, fit_calibrator


def _reference_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Isotonic regression of y on x with ties pooled (as scikit-learn does), by scipy's PAV, at every x."""
    distinct, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    means = np.bincount(inverse, weights=y) / counts
    return isotonic_regression(means, weights=counts.astype(float)).x[inverse]


def _data(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.round(rng.random(n), 2)  # ties, as model scores have
    return x, (rng.random(n) < x).astype(float)


def test_a_point_inside_a_pooled_block_gets_the_block_value() -> None:
    x, y = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 1, 0, 1])
    cal = fit_calibrator(x, y, min_positives_isotonic=1)
    assert cal.apply(x).tolist() == [0.0, 0.5, 0.5, 1.0]  # 0.2 mapped to 0.25 before (right edges only)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_calibrated_training_points_equal_the_isotonic_fit(seed: int) -> None:
    x, y = _data(seed)
    cal = fit_calibrator(x, y, min_positives_isotonic=1)
    assert cal.kind == "isotonic"
    np.testing.assert_allclose(cal.apply(x), _reference_fit(x, y), rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_calibration_equals_scikit_learn_isotonic_regression(seed: int) -> None:
    sklearn_isotonic = pytest.importorskip("sklearn.isotonic")
    x, y = _data(seed)
    cal = fit_calibrator(x, y, min_positives_isotonic=1)
    reference = sklearn_isotonic.IsotonicRegression(out_of_bounds="clip").fit(x, y)
    np.testing.assert_allclose(cal.apply(x), reference.predict(x), atol=1e-12)
    grid = np.linspace(-0.5, 1.5, 101)  # between and beyond the training points
    np.testing.assert_allclose(cal.apply(grid), reference.predict(grid), atol=1e-12)


def test_isotonic_artefact_round_trips_through_json() -> None:
    x, y = _data(3)
    cal = fit_calibrator(x, y, min_positives_isotonic=1)
    again = Calibrator.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert again.apply(x).tolist() == cal.apply(x).tolist()


def test_an_isotonic_artefact_of_the_old_format_is_refused_with_a_clear_message() -> None:
    old = {"kind": "isotonic", "edges": [0.1, 0.3, 0.4], "values": [0.0, 0.5, 1.0], "a": 1.0, "b": 0.0}
    with pytest.raises(ValueError, match="re-run `evtwin train`"):
        Calibrator.from_dict(old)
    platt = {"kind": "platt", "edges": [], "values": [], "a": 2.0, "b": -1.0}  # unaffected: still loads
    assert Calibrator.from_dict(platt).apply(np.array([0.5])).tolist() == pytest.approx([1 / (1 + np.exp(1.0))])
