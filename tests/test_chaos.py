"""Chaos suite: a real ``evtwin serve`` subprocess on 127.0.0.1, the public client, and one fault per case.

Cases: a twin actor killed mid-stream (Ray backend); the server SIGTERMed mid-stream and restarted; the
server SIGKILLed right after the client's source ended (acks still outstanding) and restarted; the checkpoint
store failing for a while. Each case prints sent / acked / applied / applied twice / lost and asserts 0 lost,
0 applied twice, that the client returns with every frame acknowledged, and that the alert history
(``ListAlerts``) equals a fault-free run of the same frames.

The server faults run the ``local`` backend (the same ``TwinHost`` durability logic, no Ray to start twice:
the suite stays within minutes on 2 cores); the actor kill needs the ``ray`` backend.
"""
from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from configs.frames import FrameBatch
from configs.schema import SCHEMA
from configs.settings import load_config
from serving.auth import Claims, issue_token
from serving.client import Client
from twins.host import HostSettings, TwinHost
from twins.synthetic import synthetic_frames

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parent.parent
SECRET = b"c" * 32
OPERATOR = issue_token(SECRET, Claims(role="operator", sub="chaos", write=True))
VEHICLES = ["CH-1", "CH-2", "CH-3"]
FRAMES_EACH = 6 * 360  # six hours at one frame every 10 s
BATCH_FRAMES = 240
# Hourly windows, alert cooldowns short enough that each injected fault episode raises its own alert.
OVERRIDES = ["twins.sensor_fault_clear_minutes=20", "twins.alert_cooldown_minutes=30"]


def fleet_batches() -> list[dict[str, np.ndarray]]:
    """Interleaved frames of every vehicle, in time order; each vehicle has three sensor-fault episodes."""
    start_ms = (int(time.time() * 1000) - 2 * 86_400_000) // 1000 * 1000
    parts = []
    for k, vehicle in enumerate(VEHICLES):
        frames = synthetic_frames(vehicle, FRAMES_EACH, start_ms=start_ms)
        name = SCHEMA.sensor_names[k % 3]
        for episode in range(3):
            row = 300 + episode * 650 + 37 * k
            frames[name][row] = SCHEMA.upper_bounds[SCHEMA.sensor_names.index(name)] * 10
        frames["vehicle_id"] = np.full(FRAMES_EACH, vehicle)
        parts.append(frames)
    columns = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    order = np.lexsort((columns["vehicle_id"], columns["ts"]))
    columns = {key: values[order] for key, values in columns.items()}
    return [{key: values[lo:lo + BATCH_FRAMES] for key, values in columns.items()}
            for lo in range(0, len(order), BATCH_FRAMES)]


def reference_alerts(batches: list[dict[str, np.ndarray]], tmp_path: Path) -> set[tuple[str, str, int]]:
    """The fault-free run: the same frames through the same twin logic, in this process."""
    config = load_config(overrides=OVERRIDES + [f"twins.checkpoint_uri={tmp_path / 'reference'}"])
    host = TwinHost(HostSettings(twins=config.twins, window_ms=int(config.dataset.window_minutes * 60_000),
                                 stride_ms=int(config.dataset.stride_minutes * 60_000),
                                 checkpoint_uri=config.twins.checkpoint_uri))
    alerts = set()
    for batch in batches:
        alerts |= {(a.vehicle_id, a.rule, a.seq) for a in host.ingest(FrameBatch.from_columns(batch)[0]).alerts}
    return alerts


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """``evtwin serve`` in its own process group (so a failed test can end everything it started)."""

    def __init__(self, tmp_path: Path, backend: str, port: int) -> None:
        secret_path = tmp_path / "auth.secret"
        secret_path.write_text(SECRET.hex())
        secret_path.chmod(0o600)  # the server refuses a signing key others can read
        self.checkpoints = tmp_path / "checkpoints"
        self.args = [sys.executable, "-m", "serving.cli", "serve", "--backend", backend, "--port", str(port),
                     "--run", str(tmp_path / "run"), "--set", f"serving.auth_secret_path={secret_path}",
                     "--set", f"twins.checkpoint_uri={self.checkpoints}", "--set", "serving.drain_timeout_s=2"]
        for override in OVERRIDES:
            self.args += ["--set", override]
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1",
                    "RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION": "0.05"}
        self.log = tmp_path / "server.log"
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout_s: float = 240.0) -> None:
        self.starts += 1
        with open(self.log, "a") as log:
            log.write(f"\n----- start {self.starts}\n")
        out = open(self.log, "a")
        self.process = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, text=True, env=self.env,
                                        cwd=ROOT, start_new_session=True)
        out.close()
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            text = self.log.read_text().rsplit(f"----- start {self.starts}\n", 1)[-1]
            if re.search(r"front door on [\d.]+:\d+", text):
                return
            if self.process.poll() is not None:
                raise AssertionError(f"server exited {self.process.returncode}:\n{text[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"server not ready in {timeout_s} s:\n{self.log.read_text()[-3000:]}")

    def signal(self, sig: int, timeout_s: float = 60.0) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        self.process.wait(timeout=timeout_s)
        if sig == signal.SIGKILL:
            self._end_group()  # what a SIGKILLed server left behind (Ray's processes) goes with it

    def _end_group(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        self._end_group()

    def descendants(self) -> list[int]:
        assert self.process is not None
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        found, frontier = [], [self.process.pid]
        while frontier:
            parent = frontier.pop()
            children = [pid for pid, ppid in parents.items() if ppid == parent]
            found += children
            frontier += children
        return found


def twin_actor_pids(server: Server) -> list[int]:
    pids = []
    for pid in server.descendants():
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "TwinHostActor" in command:
            pids.append(pid)
    return pids


def run_case(tmp_path: Path, backend: str, fault_at: float, fault: Callable[[Server], None],
             breaks_the_stream: bool = True) -> None:
    batches = fleet_batches()
    expected_alerts = reference_alerts(batches, tmp_path)
    assert len({v for v, _, _ in expected_alerts}) == len(VEHICLES)  # the run has alerts to lose
    port = free_port()
    server = Server(tmp_path, backend, port)
    fault_batch = min(int(len(batches) * fault_at), len(batches))
    faulted = threading.Event()

    def inject() -> None:
        try:
            fault(server)
        finally:
            faulted.set()

    async def source() -> Any:
        # The fault runs beside the stream (the source goes on), so it lands while frames are in flight;
        # at fault_at=1.0 it starts once the source has ended, while acks are still outstanding.
        for i, batch in enumerate(batches):
            if i == fault_batch:
                threading.Thread(target=inject, daemon=True).start()
            yield batch
        if fault_batch == len(batches):
            threading.Thread(target=inject, daemon=True).start()

    async def stream() -> Any:
        async with Client(f"127.0.0.1:{port}", OPERATOR) as client:
            stats = await asyncio.wait_for(client.stream(source(), max_unacked_frames=4 * BATCH_FRAMES,
                                                         max_reconnects=200), timeout=300)
            while not faulted.is_set():  # a fault (and restart) may still be under way after the last ack
                await asyncio.sleep(0.1)
            summaries = {v: await client.get_twin(v) for v in VEHICLES}
            alerts = await client.list_alerts(limit=10_000)
            return stats, summaries, alerts

    try:
        server.start()
        stats, summaries, alerts = asyncio.run(stream())
    finally:
        server.stop()
    sent = len(VEHICLES) * FRAMES_EACH
    applied = sum(s.frames_applied for s in summaries.values())
    applied_twice = sum(max(0, s.frames_applied - FRAMES_EACH) for s in summaries.values())
    lost = sum(max(0, FRAMES_EACH - s.frames_applied) for s in summaries.values())
    got_alerts = {(a["vehicle_id"], a["rule"], a["seq"]) for a in alerts}
    print(f"\n[{fault.__name__} at {fault_at:.0%} of the source, {backend} backend] sent={sent} "
          f"acked={stats.frames_acked} applied={applied} applied_twice={applied_twice} lost={lost} "
          f"reconnects={stats.reconnects} alerts={len(got_alerts)}/{len(expected_alerts)} (client saw {len(stats.alerts)})")
    assert faulted.is_set()
    if breaks_the_stream and fault_at < 1.0:  # at the very end the fault may come after the last ack
        assert stats.reconnects >= 1
    assert lost == 0 and applied_twice == 0
    assert stats.frames_acked == sent and stats.acked_seq == {v: FRAMES_EACH for v in VEHICLES}
    assert all(s.applied_seq == FRAMES_EACH == s.acked_seq for s in summaries.values())
    assert got_alerts == expected_alerts  # alerts not lost (and none invented)
    assert {(a["vehicle_id"], a["rule"], a["seq"]) for a in stats.alerts} <= expected_alerts


def kill_twin_actor(server: Server) -> None:
    pids = twin_actor_pids(server)
    assert pids, "no twin actor process found"
    os.kill(pids[0], signal.SIGKILL)
    deadline = time.time() + 60
    while pids[0] in twin_actor_pids(server) and time.time() < deadline:
        time.sleep(0.1)
    assert pids[0] not in twin_actor_pids(server), "the killed actor process is still there"


def sigterm_and_restart(server: Server) -> None:
    server.signal(signal.SIGTERM)
    assert server.process is not None and server.process.returncode == 0
    server.start()


def sigkill_and_restart(server: Server) -> None:
    server.signal(signal.SIGKILL)
    server.start()


def store_fails_for_a_while(server: Server) -> None:
    # Works as root too (chmod would not stop root): the folder is moved away and a file takes its place, so
    # every checkpoint and alert write fails (ENOTDIR) until the folder comes back.
    aside = server.checkpoints.with_name("checkpoints.aside")
    server.checkpoints.rename(aside)
    server.checkpoints.write_text("the store is down")
    time.sleep(3.0)
    server.checkpoints.unlink()
    aside.rename(server.checkpoints)


def test_server_sigterm_mid_stream_then_restart(tmp_path: Path) -> None:
    run_case(tmp_path, "local", 0.5, sigterm_and_restart)


def test_server_sigkill_after_the_source_ended_then_restart(tmp_path: Path) -> None:
    run_case(tmp_path, "local", 1.0, sigkill_and_restart)


def test_server_sigkill_mid_stream_then_restart(tmp_path: Path) -> None:
    run_case(tmp_path, "local", 0.4, sigkill_and_restart)


def test_checkpoint_store_fails_for_a_while(tmp_path: Path) -> None:
    run_case(tmp_path, "local", 0.3, store_fails_for_a_while)


def test_twin_actor_killed_mid_stream(tmp_path: Path) -> None:
    # The router re-sends to the restarted actor itself: the client's stream need not break.
    run_case(tmp_path, "ray", 0.5, kill_twin_actor, breaks_the_stream=False)
