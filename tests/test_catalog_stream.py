"""Streaming through a signal catalog: the client library's converter numbers and converts frames exactly as
``evtwin import`` does, batch by batch; ``evtwin stream --catalog`` sends a real fleet's files to a server."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from configs.catalog import load_catalog
from configs.schema import SCHEMA
from configs.settings import ServingConfig
from configs.source_frames import collect_vehicles
from serving.auth import Claims, issue_token
from serving.catalog_source import CatalogConverter, catalog_batches
from serving.cli import main

CATALOG = Path(__file__).resolve().parents[1] / "configs" / "catalogs" / "voltra_e5.json"
START_MS = 1_767_571_200_000  # 2026-01-05 UTC


def source_rows(vehicle: str, frames: int, counter_start: int, reboot_at: int | None, step_s: int = 10) -> pa.Table:
    """Rows as the car sends them: its names, US units, current negative when discharging, counter from any value."""
    counter = counter_start + np.arange(frames)
    if reboot_at is not None:
        counter[reboot_at:] = np.arange(frames - reboot_at)
    ts = START_MS + np.arange(frames) * step_s * 1000
    return pa.table({
        "vin": [vehicle] * frames,
        "timestamp": [np.datetime_as_string(t, unit="ms") + "Z" for t in ts.astype("datetime64[ms]")],
        "msg_ctr": counter,
        "VehSpd": np.linspace(0, 60, frames),  # mph
        "HvBattCurr": np.linspace(-120, 30, frames),  # A, negative = discharging
        "OutsideTemp": np.full(frames, 50.0),  # degF
        "ChgStatus": ["NOT_CONNECTED"] * frames,
    })


def test_the_converter_gives_contract_columns_and_continues_seq_across_batches() -> None:
    profile = load_catalog(CATALOG).profile()
    rows = pa.concat_tables([source_rows("CAR1", 30, 500, reboot_at=12), source_rows("CAR2", 30, 0, None)])
    convert = CatalogConverter(profile)
    parts = [convert(rows.slice(i, 7)) for i in range(0, rows.num_rows, 7)]
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    assert set(merged) == {"vehicle_id", "ts", "seq", "speed", "pack_current", "ambient_temp", "charger_state"}
    for vehicle in ("CAR1", "CAR2"):
        mine = merged["vehicle_id"] == vehicle
        assert merged["seq"][mine].tolist() == list(range(1, 31))
        assert np.all(np.diff(merged["ts"][mine]) > 0)
    np.testing.assert_allclose(merged["ambient_temp"], 10.0)
    np.testing.assert_allclose(merged["speed"][merged["vehicle_id"] == "CAR2"],
                               np.linspace(0, 60, 30) * 1.609344, rtol=1e-12)
    np.testing.assert_allclose(merged["pack_current"][merged["vehicle_id"] == "CAR2"], -np.linspace(-120, 30, 30))
    assert convert.counters["CAR1"].restarts == 1 and convert.counters["CAR2"].restarts == 0


def test_streaming_files_gives_the_same_frames_as_importing_them(tmp_path) -> None:
    profile = load_catalog(CATALOG).profile()
    path = tmp_path / "day.csv"
    pacsv.write_csv(pa.concat_tables([source_rows("CAR1", 40, 7, reboot_at=20), source_rows("CAR2", 25, 0, None)]),
                    path)
    batches, report = catalog_batches(profile, [path], batch_frames=16)
    imported, _ = collect_vehicles(profile, [path])
    assert max(len(b["seq"]) for b in batches) == 16
    merged = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    for frames in imported:
        mine = merged["vehicle_id"] == frames.vehicle_id
        assert merged["seq"][mine].tolist() == frames.seq.tolist()
        assert merged["ts"][mine].tolist() == frames.ts_ms.tolist()
        for name, values in frames.columns.items():
            np.testing.assert_array_equal(merged[name][mine], values)
    assert not set(merged) - {"vehicle_id", "ts", "seq", *SCHEMA.sensor_names}
    assert report.counters["CAR1"].restarts == 1
    with pytest.raises(ValueError, match="no frames to stream .* vehicles \\['NOPE'\\]"):
        catalog_batches(profile, [path], vehicles=["NOPE"])


# ------------------------------------------------------------------------------------------- gRPC
SECRET = b"c" * 32
OPERATOR = issue_token(SECRET, Claims(role="operator", sub="ops", write=True))


class _Server:
    def __init__(self) -> None:
        from serving.backend import MemoryFleet
        from serving.server import start_front_door

        self.backend = MemoryFleet()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.door = self.call(start_front_door(self.backend, ServingConfig(drain_timeout_s=2.0), secret=SECRET,
                                               host="127.0.0.1", port=0))
        self.target = f"127.0.0.1:{self.door.port}"

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def stop(self) -> None:
        self.call(self.door.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    running = _Server()
    yield running
    running.stop()


@pytest.mark.integration
def test_the_client_library_streams_source_rows_through_the_catalog(server: _Server) -> None:
    from serving.client import Client

    profile = load_catalog(CATALOG).profile()
    rows = source_rows("LIB1", 120, counter_start=0, reboot_at=50)  # a counter from 0 is not refused
    convert = CatalogConverter(profile)

    async def go() -> Any:
        async with Client(server.target, OPERATOR) as client:
            return await client.stream((rows.slice(i, 25) for i in range(0, rows.num_rows, 25)), convert=convert)

    stats = asyncio.run(go())
    assert stats.acked_seq == {"LIB1": 120} and stats.frames_acked == 120
    assert server.call(server.backend.summary("LIB1"))["frames_applied"] == 120


@pytest.mark.integration
def test_evtwin_stream_with_a_catalog_sends_every_frame_and_again_only_duplicates(server: _Server, tmp_path,
                                                                                   capsys) -> None:
    path = tmp_path / "fleet.csv"
    pacsv.write_csv(pa.concat_tables([source_rows("CLI1", 60, 3, reboot_at=30), source_rows("CLI2", 40, 0, None)]),
                    path)
    argv = ["stream", "--target", server.target, "--token", OPERATOR, "--catalog", str(CATALOG),
            "--batch-frames", "32", str(path)]
    assert main(argv) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "sent 100 frames, durable 100, duplicates 0" in err and "counter restarts: 1" in err
    assert main(argv) == 0  # the same file again: the same seq, so every frame is a duplicate
    assert "duplicates 100" in " ".join(capsys.readouterr().err.split())
    assert server.call(server.backend.summary("CLI1"))["frames_applied"] == 60


def test_input_files_without_a_catalog_are_refused(tmp_path, capsys) -> None:
    assert main(["stream", "--target", "127.0.0.1:1", str(tmp_path / "x.csv")]) == 2
    assert "need --catalog" in " ".join(capsys.readouterr().err.split())
