"""The telemetry contract: JSON, Arrow schema and validation ranges agree."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from configs.schema import SCHEMA, SCHEMA_PATH


def test_schema_has_at_least_thirty_sensor_fields_across_subsystems() -> None:
    assert len(SCHEMA.fields) >= 30
    assert {"battery", "thermal", "drivetrain", "chassis", "low_voltage", "charging", "environment"} <= {
        f.subsystem for f in SCHEMA.fields
    }


def test_arrow_schema_follows_the_json_document() -> None:
    document = json.loads(SCHEMA_PATH.read_text())
    arrow = SCHEMA.arrow_schema
    assert arrow.names == [f["name"] for f in document["key_fields"]] + [f["name"] for f in document["fields"]]
    for spec in document["fields"]:
        field = arrow.field(spec["name"])
        assert field.metadata[b"unit"].decode() == spec["unit"]
        assert float(field.metadata[b"min"]) == spec["min"]
        assert float(field.metadata[b"max"]) == spec["max"]
    assert arrow.field("ts").type == pa.timestamp("ms", tz="UTC")


def test_validation_ranges_follow_the_json_document() -> None:
    document = json.loads(SCHEMA_PATH.read_text())
    assert SCHEMA.lower_bounds.tolist() == [float(f["min"]) for f in document["fields"]]
    assert SCHEMA.upper_bounds.tolist() == [float(f["max"]) for f in document["fields"]]


def test_out_of_range_flags_nan_inf_and_limits() -> None:
    row = (SCHEMA.lower_bounds + SCHEMA.upper_bounds) / 2
    rows = np.tile(row, (4, 1))
    rows[1, 0] = np.nan
    rows[2, 1] = np.inf
    rows[3, 2] = SCHEMA.upper_bounds[2] + 1
    mask = SCHEMA.out_of_range(rows)
    assert not mask[0].any()
    assert mask[1, 0] and mask[2, 1] and mask[3, 2]
    assert mask.sum() == 3
