"""`evtwin prepare`: a generated (or real) run directory -> windowed, labelled, split Parquet datasets.

Vehicle by vehicle (memory does not grow with fleet size): read the vehicle's frames, compute the
window features with the one feature function, label the windows, append them to the split's Parquet
file. Writes under ``runs/<name>/dataset/``:

    train.parquet, validation.parquet, test.parquet   vehicle_id, window_end_ms, FEATURE_NAMES..., labels
    vehicles.parquet                                  vehicle_id, split, stratum, windows
    events.parquet, sensor_faults.parquet             ground truth with each vehicle's split
    card.json, card.md                                sizes, positives per horizon and mode, censoring, data hash
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from configs.alert_states import OUTCOME_LABEL, read_outcome_labels
from configs.runs import (
    EVENTS_FILE,
    EVENTS_SCHEMA,
    RAW_FRAMES,
    SENSOR_FAULTS_FILE,
    SENSOR_FAULTS_SCHEMA,
    list_vehicles,
    read_events,
    read_manifest,
    read_sensor_faults,
    read_vehicle_frames,
)
from configs.schema import SCHEMA
from configs.settings import Config
from training.features import FEATURE_NAMES, FEATURES_HASH, REQUIRED_COLUMNS, vehicle_feature_matrix
from training.labels import (
    MS_PER_DAY,
    NO_MODE,
    VehicleEvents,
    assign_splits,
    temporal_cutoff_ms,
    vehicle_labels,
    vehicle_strata,
)

SPLITS = ("train", "validation", "test")
# Sensors that come and go together on real vehicles: what sensor-subset augmentation removes at once.
SENSOR_SUBSYSTEMS: dict[str, tuple[str, ...]] = {
    "coolant_loop": ("coolant_temp_in", "coolant_temp_out", "coolant_flow", "pump_speed"),
    "drivetrain": ("motor_speed", "motor_torque", "motor_temp", "inverter_temp"),
    "gps_dcdc": ("latitude", "longitude", "dcdc_current"),
    "cell_detail": ("cell_temp_min", "cell_temp_max", "soh", "internal_resistance", "insulation_resistance"),
    "chassis": ("tyre_pressure_fl", "tyre_pressure_fr", "tyre_pressure_rl", "tyre_pressure_rr", "brake_pad_wear",
                "brake_temp"),
    "hvac_charging": ("hvac_power", "charge_power"),
}
_unknown = sorted({c for cs in SENSOR_SUBSYSTEMS.values() for c in cs} - set(SCHEMA.sensor_names))
if _unknown:
    raise ImportError(f"SENSOR_SUBSYSTEMS names sensors the telemetry schema lacks: {_unknown}")
AUGMENTED_SEPARATOR = "~no-"  # an augmented copy's id: <vehicle><separator><subsystem>+<subsystem>
DATASET_DIR = "dataset"
DATASET_VERSION = "1"


# --- reading the run directory ---------------------------------------------------------------------

def read_vehicle_columns(run_dir: Path, vehicle_id: str) -> dict[str, np.ndarray]:
    """'ts' (int64 ms) and every sensor column (float64, NaN for dropouts) of one vehicle, in seq order."""
    table = read_vehicle_frames(run_dir, vehicle_id)  # sorted by seq
    cols = {"ts": table.column("ts").cast(pa.int64()).to_numpy()}
    for name in REQUIRED_COLUMNS:
        if name in table.column_names:
            cols[name] = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        else:
            cols[name] = np.full(table.num_rows, np.nan)
    return cols


def read_ground_truth(run_dir: Path) -> tuple[pa.Table, pa.Table]:
    """The run's failures and sensor faults; empty tables for a run without them (a real fleet's history)."""
    run_dir = Path(run_dir)
    events = read_events(run_dir) if (run_dir / EVENTS_FILE).exists() else EVENTS_SCHEMA.empty_table()
    faults = read_sensor_faults(run_dir) if (run_dir / SENSOR_FAULTS_FILE).exists() else SENSOR_FAULTS_SCHEMA.empty_table()
    return _ms_columns(events, ("onset_ms", "failure_ms")), _ms_columns(faults, ("start_ms", "end_ms"))


MAINTENANCE_SEVERITY = 2  # a record without a severity: "major" (labelling spec, severity levels)


def read_maintenance_records(path: Path, vehicles: list[str], onset_days: float, end_ms: int) -> pa.Table:
    """A maintenance-records CSV (columns ``vehicle``, ``date`` and ``component`` or ``mode``; ``severity``
    1..3 optional) as failure events (``EVENTS_SCHEMA``).

    The failure time is the record's date (ISO date, midnight UTC, or ISO date-time); the onset is not
    known, so it is set ``onset_days`` (the longest label horizon) before: windows in that span are not
    used as normal, and horizon labels depend on the failure time only (configs/labeling_spec.md).
    A record naming a vehicle the run does not have, or an unreadable date, is an error naming it.
    """
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(Path(path), convert_options=pacsv.ConvertOptions(strings_can_be_null=False,
                                                                            column_types={"date": pa.string()}))
    columns = set(table.column_names)
    vehicle_col = "vehicle" if "vehicle" in columns else "vehicle_id"
    kind_col = "mode" if "mode" in columns else "component"
    missing = [c for c in (vehicle_col, "date", kind_col) if c not in columns]
    if missing:
        raise ValueError(f"{path}: maintenance records need columns vehicle, date and component (or mode); "
                         f"missing {missing}, found {sorted(columns)}")
    known = set(vehicles)
    rows: dict[str, list] = {name: [] for name in EVENTS_SCHEMA.names}
    severities = table.column("severity").to_pylist() if "severity" in columns else [None] * table.num_rows
    for i, (vehicle, date, kind, severity) in enumerate(zip(
            table.column(vehicle_col).to_pylist(), table.column("date").to_pylist(),
            table.column(kind_col).to_pylist(), severities, strict=True)):
        vehicle, kind = str(vehicle), str(kind).strip()
        if vehicle not in known:
            raise ValueError(f"{path}: row {i + 1}: vehicle={vehicle!r} is not a vehicle of the run")
        try:
            when = np.datetime64(str(date).strip().replace("Z", ""), "ms")
        except ValueError:
            raise ValueError(f"{path}: row {i + 1}: date={date!r} is not an ISO date or date-time") from None
        if not kind:
            raise ValueError(f"{path}: row {i + 1}: {kind_col} is empty")
        level = MAINTENANCE_SEVERITY if severity in (None, "") else int(severity)
        if level not in (1, 2, 3):
            raise ValueError(f"{path}: row {i + 1}: severity={severity!r} must be 1, 2 or 3")
        failure_ms = int(when.astype(np.int64))
        rows["vehicle_id"].append(vehicle)
        rows["mode"].append(kind)
        rows["onset_ms"].append(failure_ms - int(onset_days * MS_PER_DAY))
        rows["failure_ms"].append(failure_ms)
        rows["severity"].append(level)
        rows["observed"].append(failure_ms <= end_ms)
        rows["component"].append("")
    return pa.table(rows, schema=EVENTS_SCHEMA)


def read_outcome_events(path: Path, vehicles: list[str], onset_days: float, end_ms: int
                        ) -> tuple[pa.Table, list[tuple[str, int]], dict[str, int]]:
    """Resolved alert outcomes (the label CSV of ``evtwin prepare --outcomes``) as training evidence.

    Returns ``(events, false_alarms, counts)``:

    * a **confirmed failure** becomes a failure event (``EVENTS_SCHEMA``) of the mode the workshop found. Its
      failure time is the alert's time: the earliest moment the failure is known to be present (the resolution
      time is wall-clock, not frame time, in a replay). The onset is unknown, so, as for maintenance records,
      it is set ``onset_days`` before. Several confirmed alerts of one vehicle and mode within ``onset_days``
      are one failure (the first alert), not several;
    * a **false alarm** is ``(vehicle_id, ts_ms)``: the workshop found the vehicle healthy at that time. The
      labelling spec makes horizon labels depend on failure times only (a false alarm cannot make a window
      negative: a failure may still follow), so its use is healthy evidence for an unknown onset:
      :func:`onsets_after_false_alarms`;
    * a **sensor problem** says nothing about the vehicle's health (the data was wrong): counted, not used.

    A row naming a vehicle the run does not have, or a confirmed failure without a mode, is an error naming it.
    """
    known = set(vehicles)
    failures: list[tuple[str, str, int]] = []
    false_alarms: list[tuple[str, int]] = []
    counts = {"confirmed_failure": 0, "false_alarm": 0, "sensor_problem": 0}
    for i, row in enumerate(read_outcome_labels(path)):
        vehicle, outcome, mode = row["vehicle_id"], row["outcome"], row["mode"].strip()
        if outcome not in OUTCOME_LABEL:
            raise ValueError(f"{path}: row {i + 1}: outcome={outcome!r} must be one of {tuple(OUTCOME_LABEL)}")
        if vehicle not in known:
            raise ValueError(f"{path}: row {i + 1}: vehicle_id={vehicle!r} is not a vehicle of the run")
        counts[outcome] += 1
        if outcome == "confirmed_failure":
            if not mode:
                raise ValueError(f"{path}: row {i + 1}: a confirmed_failure needs its mode (mode is empty)")
            failures.append((vehicle, mode, int(row["ts_ms"])))
        elif outcome == "false_alarm":
            false_alarms.append((vehicle, int(row["ts_ms"])))
    onset_ms = int(onset_days * MS_PER_DAY)
    rows: dict[str, list] = {name: [] for name in EVENTS_SCHEMA.names}
    last_kept: dict[tuple[str, str], int] = {}
    for vehicle, mode, ts in sorted(failures, key=lambda f: (f[0], f[1], f[2])):
        previous = last_kept.get((vehicle, mode))
        if previous is not None and ts - previous <= onset_ms:
            continue  # another alert of the same failure
        last_kept[(vehicle, mode)] = ts
        rows["vehicle_id"].append(vehicle)
        rows["mode"].append(mode)
        rows["onset_ms"].append(ts - onset_ms)
        rows["failure_ms"].append(ts)
        rows["severity"].append(MAINTENANCE_SEVERITY)
        rows["observed"].append(ts <= end_ms)
        rows["component"].append("")
    counts["failure_events"] = len(rows["vehicle_id"])
    return pa.table(rows, schema=EVENTS_SCHEMA), false_alarms, counts


def onsets_after_false_alarms(events: pa.Table, false_alarms: list[tuple[str, int]]) -> tuple[pa.Table, int]:
    """Move the unknown onset of failure events after any false alarm of their vehicle inside ``[onset, failure)``:
    the workshop found the vehicle healthy then, so its degradation had not started. Only for events whose onset
    is a guess (maintenance records, confirmed outcomes), never a run's ground truth. Windows between the old and
    the new onset become normal for the anomaly model (labelling spec 4); horizon labels do not change (they
    depend on the failure time only). Returns the events and how many onsets moved."""
    by_vehicle: dict[str, list[int]] = {}
    for vehicle, ts in false_alarms:
        by_vehicle.setdefault(vehicle, []).append(ts)
    onsets = events.column("onset_ms").to_pylist()
    moved = 0
    for i, (vehicle, failure) in enumerate(zip(events.column("vehicle_id").to_pylist(),
                                                events.column("failure_ms").to_pylist(), strict=True)):
        healthy = [ts for ts in by_vehicle.get(vehicle, ()) if onsets[i] <= ts < failure]
        if healthy:
            onsets[i] = max(healthy)
            moved += 1
    index = events.schema.get_field_index("onset_ms")
    return events.set_column(index, events.schema.field(index), pa.array(onsets, pa.int64())), moved


def _ms_columns(table: pa.Table, names: tuple[str, ...]) -> pa.Table:
    for name in names:
        i = table.schema.get_field_index(name)
        if i >= 0 and not pa.types.is_int64(table.schema.field(i).type):
            table = table.set_column(i, name, table.column(name).cast(pa.int64()))
    return table


def events_by_vehicle(events: pa.Table, faults: pa.Table) -> dict[str, VehicleEvents]:
    out: dict[str, VehicleEvents] = {}
    ev = events.to_pydict()
    fa = faults.to_pydict()
    vehicles = set(ev["vehicle_id"]) | set(fa["vehicle_id"])
    for v in vehicles:
        rows = [i for i, x in enumerate(ev["vehicle_id"]) if x == v]
        frows = [i for i, x in enumerate(fa["vehicle_id"]) if x == v]
        out[v] = VehicleEvents.build(
            failures=[(ev["onset_ms"][i], ev["failure_ms"][i], ev["mode"][i], int(ev["severity"][i])) for i in rows],
            faults=[(fa["start_ms"][i], fa["end_ms"][i]) for i in frows],
        )
    return out


def known_until_ms(manifest: dict) -> int:
    """Failures are known up to the observation end plus the generator's latent horizon (0 for real data)."""
    latent_days = float(manifest.get("config", {}).get("simulation", {}).get("latent_failure_days", 0.0))
    return int(manifest["end_ms"]) + int(latent_days * MS_PER_DAY)


# --- the dataset ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PreparePlan:
    """Everything one vehicle's worker needs (picklable for a process pool)."""

    run_dir: str
    window_ms: int
    stride_ms: int
    min_frames: int
    horizons_days: tuple[int, ...]
    known_until_ms: int
    cutoff_ms: int | None
    post_failure_ms: int


def label_columns(horizons_days: tuple[int, ...]) -> list[str]:
    return [f"y_{h}d" for h in horizons_days] + [
        "next_failure_ms", "next_mode", "next_severity", "degrading", "sensor_fault", "anomaly", "post_failure",
        "event_onset_ms", "event_failure_ms",
    ]


def dataset_schema(horizons_days: tuple[int, ...]) -> pa.Schema:
    label_types = {"next_failure_ms": pa.int64(), "next_mode": pa.string(), "next_severity": pa.int8(),
                   "degrading": pa.bool_(), "sensor_fault": pa.bool_(), "anomaly": pa.bool_(),
                   "post_failure": pa.bool_(), "event_onset_ms": pa.int64(), "event_failure_ms": pa.int64()}
    fields = [pa.field("vehicle_id", pa.string()), pa.field("window_end_ms", pa.int64())]
    fields += [pa.field(name, pa.float32()) for name in FEATURE_NAMES]
    fields += [pa.field(f"y_{h}d", pa.int8()) for h in horizons_days]
    fields += [pa.field(k, t) for k, t in label_types.items()]
    return pa.schema(fields, metadata={"features_hash": FEATURES_HASH, "schema_version": SCHEMA.version})


def vehicle_table(plan: PreparePlan, vehicle_id: str, split: str, events: VehicleEvents,
                  drop: tuple[str, ...] = (), table_id: str | None = None) -> pa.Table:
    """Windows, features and labels of one vehicle, restricted to its split's side of a temporal cut.

    ``drop``: sensors removed (all NaN, as a vehicle that does not send them) before the features;
    ``table_id``: the vehicle id written in the rows (an augmented copy's), default ``vehicle_id``.
    """
    cols = read_vehicle_columns(Path(plan.run_dir), vehicle_id)
    for name in drop:
        if name not in cols:
            raise ValueError(f"drop names {name!r}, not a sensor of the telemetry schema")
        cols[name] = np.full(cols[name].size, np.nan)
    ends, X = vehicle_feature_matrix(cols, plan.window_ms, plan.stride_ms, plan.min_frames)
    known = plan.known_until_ms
    if plan.cutoff_ms is not None:
        keep = ends > plan.cutoff_ms if split == "test" else ends <= plan.cutoff_ms
        ends, X = ends[keep], X[keep]
        if split != "test":
            known = min(known, plan.cutoff_ms)  # train on the past: labels may not look past the cut
    labels = vehicle_labels(ends, plan.window_ms, events, plan.horizons_days, known, plan.post_failure_ms)
    schema = dataset_schema(plan.horizons_days)
    arrays = [pa.array(np.full(ends.size, table_id or vehicle_id, dtype=object), pa.string()), pa.array(ends, pa.int64())]
    arrays += [pa.array(X[:, j]) for j in range(X.shape[1])]
    for name in label_columns(plan.horizons_days):
        arrays.append(pa.array(labels[name], schema.field(name).type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _work(args: tuple[PreparePlan, str, str, VehicleEvents, tuple[str, ...], str]) -> tuple[str, str, pa.Table]:
    plan, vehicle_id, split, events, drop, table_id = args
    return table_id, split, vehicle_table(plan, vehicle_id, split, events, drop, table_id)


def augmented_copies(vehicles: list[str], splits: dict[str, str], share: float, seed: int
                     ) -> list[tuple[str, tuple[str, ...], str]]:
    """(vehicle, sensors removed, copy id) for ``share`` of the train vehicles (sensor-subset augmentation).

    Each chosen vehicle loses the sensors of 1 or 2 random ``SENSOR_SUBSYSTEMS``; the choice depends
    only on (seed, vehicle id), so the dataset stays deterministic.
    """
    if share <= 0:
        return []
    names = sorted(SENSOR_SUBSYSTEMS)
    out = []
    for v in vehicles:
        if splits.get(v) != "train":
            continue
        rng = np.random.default_rng([seed, int.from_bytes(hashlib.sha256(v.encode()).digest()[:8], "little")])
        if rng.random() >= share:
            continue
        chosen = sorted(rng.choice(names, size=int(rng.integers(1, 3)), replace=False).tolist())
        drop = tuple(c for name in chosen for c in SENSOR_SUBSYSTEMS[name])
        out.append((v, drop, f"{v}{AUGMENTED_SEPARATOR}{'+'.join(chosen)}"))
    return out


def plan_splits(cfg: Config, vehicles: list[str], events: pa.Table, known_until: int) -> tuple[dict[str, str], dict[str, str]]:
    """(vehicle -> split, vehicle -> stratum): stratum = mode of the vehicle's first known failure."""
    ev = events.filter(pc.less_equal(events.column("failure_ms"), known_until)).sort_by("failure_ms").to_pydict()
    first_mode: dict[str, str] = {}
    for v, m in zip(ev["vehicle_id"], ev["mode"], strict=False):
        first_mode.setdefault(v, m)
    strata = vehicle_strata(vehicles, first_mode)
    return assign_splits(strata, cfg.dataset.split_fractions, cfg.seed), strata


def prepare_dataset(run_dir: Path, cfg: Config, *, all_test: bool = False, workers: int = 1,
                    on_vehicle: Callable[[str], None] | None = None, maintenance: Path | None = None,
                    outcome_labels: Path | None = None) -> dict:
    """Build ``run_dir/dataset``; returns the dataset card. ``all_test`` puts every vehicle in test
    (a fleet generated with another seed, for out-of-sample evaluation). ``maintenance``: a
    maintenance-records CSV (:func:`read_maintenance_records`) whose records become the failure events
    (added to the run's events.parquet, if any); without events and records the dataset has no failure
    labels (an imported fleet): ``evtwin train`` then trains the anomaly path, plant and baselines only.
    ``outcome_labels``: resolved alert outcomes (:func:`read_outcome_events`): confirmed failures become failure
    events, false alarms move guessed onsets (:func:`onsets_after_false_alarms`)."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    vehicles = list_vehicles(run_dir)
    if not vehicles:
        raise FileNotFoundError(f"{run_dir}: no vehicles under {RAW_FRAMES}/")
    events, faults = read_ground_truth(run_dir)
    known = known_until_ms(manifest)
    horizons = tuple(int(h) for h in cfg.labels.failure_horizons_days)
    guessed = [EVENTS_SCHEMA.empty_table()]  # events whose onset is not known
    if maintenance is not None:
        guessed.append(read_maintenance_records(maintenance, vehicles, max(horizons), int(manifest["end_ms"])))
    outcomes = None
    if outcome_labels is not None:
        confirmed, false_alarms, outcomes = read_outcome_events(outcome_labels, vehicles, max(horizons),
                                                                int(manifest["end_ms"]))
        guessed.append(confirmed)
    if len(guessed) > 1:
        records = pa.concat_tables(guessed)
        if outcomes is not None:
            records, outcomes["onsets_moved"] = onsets_after_false_alarms(records, false_alarms)
            outcomes["file"] = str(outcome_labels)
        events = pa.concat_tables([events.select(EVENTS_SCHEMA.names).cast(EVENTS_SCHEMA), records])
    if all_test:
        splits = {v: "test" for v in vehicles}
        strata, cutoff = {v: "-" for v in vehicles}, None
    else:
        splits, strata = plan_splits(cfg, vehicles, events, known)
        cutoff = temporal_cutoff_ms(int(manifest["start_ms"]), int(manifest["end_ms"]), horizons,
                                    cfg.dataset.test_after_fraction)
    plan = PreparePlan(
        run_dir=str(run_dir), window_ms=cfg.dataset.window_ms,
        stride_ms=cfg.dataset.stride_ms, min_frames=cfg.dataset.min_frames_per_window,
        horizons_days=horizons, known_until_ms=known, cutoff_ms=cutoff,
        post_failure_ms=int(cfg.labels.post_failure_grace_days * MS_PER_DAY),
    )
    per_vehicle = events_by_vehicle(events, faults)
    out_dir = run_dir / DATASET_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    schema = dataset_schema(horizons)
    writers = {s: pq.ParquetWriter(out_dir / f"{s}.parquet", schema, compression="zstd") for s in SPLITS}
    digest = hashlib.sha256(f"{FEATURES_HASH}|{DATASET_VERSION}".encode())
    stats = _CardStats(horizons)
    window_counts: dict[str, int] = {}
    try:
        jobs = [(plan, v, splits[v], per_vehicle.get(v, VehicleEvents()), (), v) for v in vehicles]
        jobs += [(plan, v, "train", per_vehicle.get(v, VehicleEvents()), drop, copy_id)
                 for v, drop, copy_id in augmented_copies(vehicles, splits, cfg.dataset.sensor_subset_augmentation,
                                                          cfg.seed)]
        for vehicle_id, split, table in _map(jobs, workers):
            writers[split].write_table(table)
            for column in table.columns:
                digest.update(np.ascontiguousarray(column.to_numpy(zero_copy_only=False)).tobytes()
                              if not pa.types.is_string(column.type) else "\x1f".join(column.to_pylist()).encode())
            stats.add(split, table)
            window_counts[vehicle_id] = table.num_rows
            if on_vehicle is not None:
                on_vehicle(vehicle_id)
    finally:
        for w in writers.values():
            w.close()
    pq.write_table(pa.table({
        "vehicle_id": vehicles, "split": [splits[v] for v in vehicles], "stratum": [strata[v] for v in vehicles],
        "windows": [window_counts.get(v, 0) for v in vehicles],
    }), out_dir / "vehicles.parquet")
    split_of = pa.array([splits.get(v, "") for v in events.column("vehicle_id").to_pylist()], pa.string())
    pq.write_table(events.append_column("split", split_of), out_dir / "events.parquet")
    fsplit = pa.array([splits.get(v, "") for v in faults.column("vehicle_id").to_pylist()], pa.string())
    pq.write_table(faults.append_column("split", fsplit), out_dir / "sensor_faults.parquet")
    card = stats.card(
        run=str(run_dir), data_hash=digest.hexdigest()[:16], features_hash=FEATURES_HASH,
        schema_version=SCHEMA.version, window_ms=plan.window_ms, stride_ms=plan.stride_ms, horizons=horizons,
        known_until_ms=known, cutoff_ms=cutoff, start_ms=int(manifest["start_ms"]), end_ms=int(manifest["end_ms"]),
        vehicles={s: sum(1 for v in vehicles if splits[v] == s) for s in SPLITS}, all_test=all_test,
        source_config_hash=manifest.get("config_hash"), config=cfg.model_dump(mode="json"),
        events_by_split={s: int(sum(1 for x in split_of.to_pylist() if x == s)) for s in SPLITS},
        augmented_copies=sorted(k for k in window_counts if AUGMENTED_SEPARATOR in k),
        failure_labels=events.num_rows > 0, maintenance_records=None if maintenance is None else str(maintenance),
        outcome_labels=outcomes,
    )
    (out_dir / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (out_dir / "card.md").write_text(card_markdown(card))
    return card


def _map(jobs: list, workers: int) -> Iterator[tuple[str, str, pa.Table]]:
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_work, jobs)
        return
    # spawn, not fork: the parent runs threads (progress display, pyarrow pools).
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        yield from pool.map(_work, jobs, chunksize=1)


class _CardStats:
    def __init__(self, horizons: tuple[int, ...]) -> None:
        self.horizons = horizons
        self.rows = {s: 0 for s in SPLITS}
        self.pos = {s: {h: 0 for h in horizons} for s in SPLITS}
        self.cens = {s: {h: 0 for h in horizons} for s in SPLITS}
        self.pos_mode = {s: {h: {} for h in horizons} for s in SPLITS}
        self.anomaly = {s: {"degrading": 0, "sensor_fault": 0} for s in SPLITS}

    def add(self, split: str, table: pa.Table) -> None:
        self.rows[split] += table.num_rows
        modes = np.asarray(table.column("next_mode").to_pylist(), dtype=object)
        for h in self.horizons:
            y = table.column(f"y_{h}d").to_numpy()
            self.pos[split][h] += int((y == 1).sum())
            self.cens[split][h] += int((y == -1).sum())
            for m in modes[y == 1]:
                self.pos_mode[split][h][m] = self.pos_mode[split][h].get(m, 0) + 1
        for k in ("degrading", "sensor_fault"):
            self.anomaly[split][k] += int(np.asarray(table.column(k).to_numpy(zero_copy_only=False)).sum())

    def card(self, **meta) -> dict:
        return {
            **meta,
            "dataset_version": DATASET_VERSION,
            "windows": self.rows,
            "positives": {s: {str(h): v for h, v in d.items()} for s, d in self.pos.items()},
            "censored": {s: {str(h): v for h, v in d.items()} for s, d in self.cens.items()},
            "positives_by_mode": {s: {str(h): dict(sorted(m.items())) for h, m in d.items()} for s, d in self.pos_mode.items()},
            "anomalous_windows": self.anomaly,
            "features": len(FEATURE_NAMES),
        }


def card_markdown(card: dict) -> str:
    hs = [str(h) for h in card["horizons"]]
    lines = [
        f"# Dataset card: {card['run']}", "",
        f"- data hash `{card['data_hash']}`, features `{card['features_hash']}` ({card['features']} features), "
        f"telemetry schema {card['schema_version']}",
        f"- windows of {card['window_ms'] / 60000:g} min every {card['stride_ms'] / 60000:g} min; horizons {', '.join(hs)} days",
        f"- failures known until {card['known_until_ms']} ms; temporal cut: "
        + ("none (observation too short for the longest horizon on both sides)" if card["cutoff_ms"] is None
           else f"test windows after {card['cutoff_ms']} ms"),
        "", "| split | vehicles | windows | " + " | ".join(f"pos {h}d | cens {h}d" for h in hs) + " | degrading | sensor fault |",
        "|---" * (5 + 2 * len(hs)) + "|",
    ]
    for s in SPLITS:
        cells = " | ".join(f"{card['positives'][s][h]} | {card['censored'][s][h]}" for h in hs)
        lines.append(f"| {s} | {card['vehicles'][s]} | {card['windows'][s]} | {cells} | "
                     f"{card['anomalous_windows'][s]['degrading']} | {card['anomalous_windows'][s]['sensor_fault']} |")
    lines += ["", f"Positive windows by mode (horizon {hs[-1]} d):", ""]
    modes = sorted({m for s in SPLITS for m in card["positives_by_mode"][s][hs[-1]]} - {NO_MODE})
    lines += ["| mode | " + " | ".join(SPLITS) + " |", "|---|---|---|---|"]
    for m in modes:
        lines.append(f"| {m} | " + " | ".join(str(card["positives_by_mode"][s][hs[-1]].get(m, 0)) for s in SPLITS) + " |")
    return "\n".join(lines) + "\n"


def read_split(run_dir: Path, split: str, columns: list[str] | None = None) -> pa.Table:
    path = Path(run_dir) / DATASET_DIR / f"{split}.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: run `evtwin prepare --run {run_dir}` first")
    table = pq.read_table(path, columns=columns)
    found = (table.schema.metadata or {}).get(b"features_hash", b"").decode()
    if found != FEATURES_HASH:
        raise ValueError(f"{path}: built with feature set {found or '?'}, this code computes {FEATURES_HASH}; "
                         "re-run `evtwin prepare`")
    return table


def read_card(run_dir: Path) -> dict:
    path = Path(run_dir) / DATASET_DIR / "card.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: run `evtwin prepare --run {run_dir}` first")
    return json.loads(path.read_text())
