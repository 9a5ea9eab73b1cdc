"""Model artefacts: round trip, provenance, and refusal of artefacts built for other features/schemas."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from configs.settings import load_config
from training import artifacts
from training.artifacts import ArtifactMismatch, load_anomaly_model, load_failure_model, load_severity_model
from training.features import FEATURE_NAMES
from training.plant import MODEL_FEATURE_NAMES, fit_plant
from training.train import (
    SplitData,
    healthy_rows,
    train_anomaly,
    train_failure,
    train_severity,
    vehicle_blocks,
    with_plant,
    write_plant,
)

HOURS = 24 * 12


def synthetic_split(seed: int, vehicles: int = 6) -> SplitData:
    """Windows where one precursor feature rises in the days before each failing vehicle's failure."""
    rng = np.random.default_rng(seed)
    rows = vehicles * HOURS
    X = rng.normal(0, 1, (rows, len(FEATURE_NAMES))).astype(np.float32)
    vid = np.repeat([f"V{seed}{i}" for i in range(vehicles)], HOURS).astype(object)
    ends = np.tile(np.arange(1, HOURS + 1) * 3_600_000, vehicles).astype(np.int64)
    failing = np.repeat(np.arange(vehicles) % 2 == 0, HOURS)
    failure_ms = np.where(failing, (HOURS + 24) * 3_600_000, -1)
    ttf_days = (failure_ms - ends) / 86_400_000
    precursor = FEATURE_NAMES.index("cell_v_spread_mean")
    X[:, precursor] += np.where(failing, np.clip(10 - ttf_days, 0, None), 0).astype(np.float32)
    labels = {
        "y_7d": np.where(failing & (ttf_days <= 7), 1, 0).astype(np.int8),
        "y_14d": np.where(failing & (ttf_days <= 14), 1, 0).astype(np.int8),
        "next_mode": np.where(failing, "cell_imbalance", "").astype(object),
        "next_severity": np.where(failing, 1 + (np.arange(rows) // HOURS) % 3, 0).astype(np.int8),
        "degrading": failing & (ttf_days <= 10), "sensor_fault": np.zeros(rows, bool),
        "post_failure": np.zeros(rows, bool),
        "event_onset_ms": np.full(rows, -1), "event_failure_ms": np.full(rows, -1),
        "next_failure_ms": failure_ms.astype(np.int64),
    }
    labels["anomaly"] = labels["degrading"].copy()
    return SplitData(vid, ends, X, labels)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, SplitData]:
    import pyarrow as pa

    run = tmp_path_factory.mktemp("run")
    cfg = load_config(overrides=["labels.failure_horizons_days=[7, 14]", "training.lstm_epochs=1",
                                 "training.lightgbm_num_rounds=30", "training.lstm_sequence_length=4"])
    tr, va = synthetic_split(1), synthetic_split(2)
    meta = {**artifacts.provenance(), "model_feature_names": list(MODEL_FEATURE_NAMES), "data_hash": "test",
            "config": cfg.model_dump(mode="json")}
    plant = fit_plant(tr.X, healthy_rows(tr))
    write_plant(run, plant)
    with_plant(tr, plant), with_plant(va, plant)
    train_failure(cfg, run, tr, va, (7, 14), meta)
    train_severity(cfg, run, tr, va, 14, meta)
    events = pa.table({"vehicle_id": pa.array([], pa.string()), "onset_ms": pa.array([], pa.int64()),
                       "failure_ms": pa.array([], pa.int64()), "mode": pa.array([], pa.string())})
    train_anomaly(cfg, run, tr, va, vehicle_blocks(va, events, 3_600_000), meta, 3_600_000)
    return run, va


def test_failure_model_round_trips_and_predicts_calibrated_monotone_risk(trained) -> None:
    run, va = trained
    model = load_failure_model(run)
    probs = model.predict(va.X)
    assert set(probs) == {7, 14}
    assert all(p.shape == (va.size,) and np.all((p >= 0) & (p <= 1)) for p in probs.values())
    assert np.all(probs[14] >= probs[7])
    # The precursor separates failing from healthy windows.
    y = va.labels["y_7d"] == 1
    assert probs[7][y].mean() > probs[7][~y].mean() + 0.3
    top = model.contributions(va.X[:3], top_k=2)
    assert len(top) == 3 and len(top[0]) == 2 and top[0][0][0] in FEATURE_NAMES


def test_loaded_model_predicts_single_rows_like_batches(trained) -> None:
    run, va = trained
    model = load_failure_model(run)
    batch = model.predict(va.X[:5])[7]
    single = np.array([model.predict(va.X[i])[7][0] for i in range(5)])
    assert np.allclose(batch, single)


def test_severity_and_anomaly_models_round_trip(trained) -> None:
    run, va = trained
    proba = load_severity_model(run).predict_proba(va.X[:10])
    assert proba.shape == (10, 3) and np.allclose(proba.sum(axis=1), 1.0)
    ae = load_anomaly_model(run)
    seq = np.stack([va.X[:ae.sequence_length]] * 2)
    errors, shares = ae.score(seq)  # full feature vectors are accepted
    errors2, _ = ae.score(seq[:, :, ae.signal_index])  # and the signal columns alone
    assert errors.shape == (2,) and shares.shape == (2, len(ae.signal_names))
    assert np.allclose(errors, errors2) and np.allclose(shares.sum(axis=1), 1.0, atol=1e-4)
    assert ae.threshold > 0 and ae.alert_threshold > 0


def test_the_anomaly_model_records_the_fleets_normal_error_per_signal(trained, caplog) -> None:
    run, _ = trained
    ae = load_anomaly_model(run)
    reference = ae.signal_error_reference
    assert reference is not None and reference.shape == (len(ae.signal_names),) and (reference >= 0).all()
    # Per-signal errors of a sequence sum to its error, so the typical signal is a small part of the threshold.
    assert 0 < reference.sum() <= ae.threshold
    older = _tamper(run, "anomaly", "signal_error_reference", None)  # a model trained before it was recorded
    meta_path = older / "models" / "anomaly" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["signal_error_reference"]
    meta_path.write_text(json.dumps(meta))
    with caplog.at_level("WARNING", logger="training.artifacts"):
        assert load_anomaly_model(older).signal_error_reference is None
    assert "signal_error_reference" in caplog.text  # the fallback is announced once, at load
    with pytest.raises(ArtifactMismatch, match="signal_error_reference"):
        load_anomaly_model(_tamper(run, "anomaly", "signal_error_reference", [1.0, 2.0]))


def test_every_artefact_carries_its_provenance(trained) -> None:
    run, _ = trained
    for kind in ("failure", "severity", "anomaly"):
        meta = json.loads((run / "models" / kind / "meta.json").read_text())
        for key in ("feature_names", "features_hash", "schema_version", "data_hash", "config", "metrics", "versions"):
            assert key in meta, (kind, key)
        assert meta["versions"]["lightgbm"] and meta["versions"]["torch"]


def _tamper(run: Path, kind: str, key: str, value) -> Path:
    copy = run.parent / f"{run.name}-{kind}-{key}"
    import shutil

    shutil.copytree(run, copy, dirs_exist_ok=True)
    path = copy / "models" / kind / "meta.json"
    meta = json.loads(path.read_text())
    meta[key] = value
    path.write_text(json.dumps(meta))
    return copy


@pytest.mark.parametrize("kind, loader", [("failure", load_failure_model), ("severity", load_severity_model),
                                          ("anomaly", load_anomaly_model)])
def test_loaders_refuse_other_feature_lists_and_schema_versions(trained, kind, loader) -> None:
    run, _ = trained
    with pytest.raises(ArtifactMismatch, match="feature"):
        loader(_tamper(run, kind, "feature_names", list(FEATURE_NAMES[:-1]) + ["something_else"]))
    with pytest.raises(ArtifactMismatch, match="schema"):
        loader(_tamper(run, kind, "schema_version", "0.0.1"))


def test_torch_weights_are_a_plain_state_dict(trained) -> None:
    import torch

    run, _ = trained
    state = torch.load(run / "models" / "anomaly" / "weights.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_training_sequences_match_the_scoring_path_and_normal_ends_skip_anomalies() -> None:
    from training.anomaly import feature_sequences
    from training.train import _normal_sequence_ends, _sequence_rows

    data = synthetic_split(3, vehicles=3)
    rows = np.arange(data.size)
    offline = data.X[_sequence_rows(data, rows, 5)]
    per_vehicle = np.concatenate([feature_sequences(data.X[a:a + HOURS], 5) for a in range(0, data.size, HOURS)])
    assert np.array_equal(offline, per_vehicle)
    normal = _normal_sequence_ends(data, 5)
    bad = np.flatnonzero(data.labels["anomaly"])
    assert not normal[bad].any()
    assert not normal[bad[0] + 4] and normal[bad[0] - 1]  # a sequence reaching back to an anomaly is not normal


def _replace_file(run: Path, kind: str, name: str, data: bytes, tag: str) -> Path:
    import shutil

    copy = run.parent / f"{run.name}-replaced-{tag}"
    shutil.copytree(run, copy, dirs_exist_ok=True)
    (copy / "models" / kind / name).write_bytes(data)
    return copy


def test_training_records_the_sha256_of_every_model_file(trained) -> None:
    import hashlib

    run, _ = trained
    expected = {"failure": {"h7.txt", "h14.txt", "mode.txt", "plant.json"}, "severity": {"model.txt", "plant.json"},
                "anomaly": {"weights.pt"}}
    for kind, names in expected.items():
        folder = run / "models" / kind
        digests = json.loads((folder / "meta.json").read_text())["sha256"]
        present = {n for n in names if (folder / n).exists()}
        assert set(digests) == present and present, kind
        for name in present:
            assert digests[name] == hashlib.sha256((folder / name).read_bytes()).hexdigest()


def test_a_replaced_model_file_is_refused_naming_the_file_and_both_digests(trained) -> None:
    import hashlib

    import torch

    from training.anomaly import LstmAutoencoder

    run, _ = trained
    failure = run / "models" / "failure"
    other_valid_model = (failure / "h14.txt").read_bytes()  # a valid LightGBM model, just not this one
    replaced = _replace_file(run, "failure", "h7.txt", other_valid_model, "h7")
    recorded = json.loads((failure / "meta.json").read_text())["sha256"]["h7.txt"]
    with pytest.raises(ArtifactMismatch) as caught:
        load_failure_model(replaced)
    message = str(caught.value)
    assert "h7.txt" in message and recorded in message and hashlib.sha256(other_valid_model).hexdigest() in message

    ae_meta = json.loads((run / "models" / "anomaly" / "meta.json").read_text())
    net = LstmAutoencoder(len(ae_meta["signal_names"]), int(ae_meta["hidden_size"]), int(ae_meta["sequence_length"]))
    import io

    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)  # a valid state dict of the right shape, other weights
    with pytest.raises(ArtifactMismatch, match="weights.pt"):
        load_anomaly_model(_replace_file(run, "anomaly", "weights.pt", buffer.getvalue(), "weights"))
    severity_text = (run / "models" / "severity" / "model.txt").read_text().replace("\n", "\n\n", 1).encode()
    with pytest.raises(ArtifactMismatch, match="model.txt"):
        load_severity_model(_replace_file(run, "severity", "model.txt", severity_text, "severity"))


@pytest.mark.parametrize("kind, loader", [("failure", load_failure_model), ("severity", load_severity_model),
                                          ("anomaly", load_anomaly_model)])
def test_an_artefact_without_digests_is_refused_with_a_message_to_retrain(trained, kind, loader) -> None:
    run, _ = trained
    copy = _tamper(run, kind, "sha256", None)
    path = copy / "models" / kind / "meta.json"
    meta = json.loads(path.read_text())
    del meta["sha256"]
    path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactMismatch, match="retrain"):
        loader(copy)


def test_a_feature_list_in_another_order_names_the_first_differing_position(trained) -> None:
    run, _ = trained
    swapped = list(FEATURE_NAMES)
    swapped[3], swapped[5] = swapped[5], swapped[3]
    with pytest.raises(ArtifactMismatch) as caught:
        load_failure_model(_tamper(run, "failure", "feature_names", swapped))
    message = str(caught.value)
    assert "order" in message and "position 3" in message
    assert repr(FEATURE_NAMES[3]) in message and repr(FEATURE_NAMES[5]) in message
