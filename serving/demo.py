"""``evtwin demo`` (``make demo``): the whole product, end to end, on the default config.

    generate -> prepare -> train -> evaluate -> serve (Ray, model services, twins, gRPC) ->
    stream the fleet through the gRPC API -> alerts live, each judged against ground truth ->
    summary table, paths of the report and plots.

Offline steps run the other areas' CLI subcommands in this process (``serving.cli.main``), so the demo
exercises exactly what a user types; a failing step stops the demo with its name and exit code.
The serving part runs the real server on a free localhost port with real credentials, and everything it
started (server, Serve apps, Ray) is stopped before returning, also on Ctrl-C or failure.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from configs.runs import EVENTS_FILE, SENSOR_FAULTS_FILE, read_events, read_sensor_faults
from configs.settings import Config
from serving.app import open_runtime
from serving.auth import Claims, issue_token, load_or_create_keys
from serving.cli import main as cli_main
from serving.client import Client
from serving.codec import alert_from_proto, alert_to_proto
from serving.explanations import ExplanationIndex, evidence_from_alert
from serving.server import start_front_door
from serving.sources import paced, replay_run
from serving.terminal import alert_line
from training.artifacts import load_anomaly_model, load_failure_model, load_severity_model
from training.features import FEATURES_HASH
from training.judge import (
    FAILURE,
    FALSE_ALARM,
    SENSOR_FAULT,
    UNJUDGED,
    AlertCall,
    FailureEvent,
    JudgeRules,
    SensorFaultEpisode,
    Verdict,
    judge_alert,
)

console = Console(stderr=True)

# Below this cosine similarity the nearest knowledge entry is shown as a guess, not an explanation.
WEAK_MATCH_SIMILARITY = 0.2
# A failure_risk alert is true when the failure follows within this (the shortest risk horizon, the one
# the alert's message names); configs/evaluation_metrics.md, "Judging alerts".
DEFAULT_MATCH_HORIZON_DAYS = 7


@dataclass(frozen=True)
class OfflineStep:
    name: str
    argv: Callable[[Path, Path], list[str]]  # (config_path, run_dir) -> CLI arguments
    done: Callable[[Path], bool]  # already there (skip unless --fresh)


OFFLINE_STEPS: tuple[OfflineStep, ...] = (
    OfflineStep("generate", lambda c, r: ["generate", "--config", str(c), "--out", str(r), "--overwrite", "--plots"],
                lambda r: (r / "manifest.json").exists()),
    OfflineStep("prepare", lambda c, r: ["prepare", "--config", str(c), "--run", str(r)],
                lambda r: _dataset_matches_code(r)),
    OfflineStep("train", lambda c, r: ["train", "--config", str(c), "--run", str(r)],
                lambda r: _models_match_code(r)),
    OfflineStep("evaluate", lambda c, r: ["evaluate", "--config", str(c), "--run", str(r)],
                lambda r: (r / "evaluation").exists()),
)


def _dataset_matches_code(run_dir: Path) -> bool:
    """A prepared dataset is reusable only if it was built with this code's feature set."""
    card = run_dir / "dataset" / "card.json"
    if not card.exists():
        return False
    return json.loads(card.read_text()).get("features_hash") == FEATURES_HASH


def _models_match_code(run_dir: Path) -> bool:
    """Trained models are reusable only if every loader accepts them (same features and schema)."""
    if not (run_dir / "models").exists():
        return False
    try:
        for load in (load_failure_model, load_severity_model, load_anomaly_model):
            load(run_dir)
    except (ValueError, FileNotFoundError, KeyError):
        return False
    return True


@dataclass
class GroundTruth:
    """Failures and sensor faults the generator planted, to judge each alert (with ``training.judge``)."""

    failures: dict[str, list[tuple[int, int, str]]] = field(default_factory=dict)  # vehicle -> (onset, failure, mode)
    faults: dict[str, list[tuple[int, int, str]]] = field(default_factory=dict)  # vehicle -> (start, end, field)
    horizon_ms: int = DEFAULT_MATCH_HORIZON_DAYS * 86_400_000  # a failure_risk alert predicts this far ahead
    window_ms: int = 3_600_000  # an alert stamped t rests on data in (t - window_ms, t]
    post_failure_ms: int = 3 * 86_400_000  # repair time after a failure: alerts there are not judged

    @classmethod
    def load(cls, run_dir: Path, horizon_days: int = DEFAULT_MATCH_HORIZON_DAYS) -> GroundTruth:
        truth = cls(horizon_ms=horizon_days * 86_400_000)
        if (run_dir / EVENTS_FILE).exists():
            for row in read_events(run_dir).to_pylist():
                truth.failures.setdefault(row["vehicle_id"], []).append(
                    (_ms(row["onset_ms"]), _ms(row["failure_ms"]), row["mode"]))
        if (run_dir / SENSOR_FAULTS_FILE).exists():
            for row in read_sensor_faults(run_dir).to_pylist():
                truth.faults.setdefault(row["vehicle_id"], []).append(
                    (_ms(row["start_ms"]), _ms(row["end_ms"]), row.get("field", "")))
        return truth

    @property
    def rules(self) -> JudgeRules:
        return JudgeRules(window_ms=self.window_ms, risk_horizon_ms=self.horizon_ms,
                          post_failure_ms=self.post_failure_ms)

    def verdict(self, alert: dict[str, Any]) -> Verdict:
        """The judge's verdict on one alert (indices refer to this vehicle's failures / faults lists)."""
        vehicle = alert["vehicle_id"]
        return judge_alert(AlertCall(vehicle, int(alert["ts_ms"]), alert["rule"]),
                           [FailureEvent(vehicle, onset, failure, mode)
                            for onset, failure, mode in self.failures.get(vehicle, [])],
                           [SensorFaultEpisode(vehicle, start, end, name)
                            for start, end, name in self.faults.get(vehicle, [])], self.rules)

    def judge(self, alert: dict[str, Any]) -> tuple[bool, str, float | None]:
        """(true alert?, what it matched, lead time in days before the failure)."""
        verdict = self.verdict(alert)
        if verdict.outcome == FAILURE:
            failures = self.failures[alert["vehicle_id"]]
            first = min(verdict.events, key=lambda i: failures[i][1])
            return True, failures[first][2], verdict.lead_ms / 86_400_000
        if verdict.outcome == SENSOR_FAULT:
            return True, f"sensor fault {self.faults[alert['vehicle_id']][verdict.faults[0]][2]}", None
        if verdict.outcome == UNJUDGED:
            return False, "not judged: repair time after a failure, or a fault or degradation it does not match", None
        return False, "no failure or fault", None


def _ms(value: Any) -> int:
    if hasattr(value, "timestamp"):
        return int(value.timestamp() * 1000)
    return int(value)


def run_offline_steps(config_path: Path, run_dir: Path, fresh: bool) -> dict[str, str]:
    outcome: dict[str, str] = {}
    for step in OFFLINE_STEPS:
        if fresh and step.name == "generate":
            pass  # regenerate: every later step is redone because its input changed
        elif not fresh and step.done(run_dir) and all(v == "reused" for v in outcome.values()):
            outcome[step.name] = "reused"
            console.print(f"[dim]{step.name}: already in {run_dir}, reused (--fresh to redo)[/dim]")
            continue
        console.rule(f"[bold]{step.name}")
        started = time.perf_counter()
        try:
            code = cli_main(step.argv(config_path, run_dir))
        except SystemExit as exit_:  # argparse refused the step's own arguments: a bug, say which step
            code = exit_.code if isinstance(exit_.code, int) else 2
        if code != 0:
            raise RuntimeError(f"demo step {step.name!r} failed with exit code {code}")
        outcome[step.name] = f"{time.perf_counter() - started:.0f} s"
    return outcome


async def stream_fleet(config: Config, run_dir: Path, runtime: Any, speed: float, truth: GroundTruth,
                       on_alert: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Serve ``runtime`` over gRPC, stream the run through it, return the client's statistics."""

    def alert_from_dict(alert: Any) -> dict[str, Any]:
        return alert_from_proto(alert_to_proto(alert))

    cfg = config.serving
    secret = load_or_create_keys(run_dir / "keys" / "auth.secret")
    # The demo streams as one gateway for the whole fleet (one stream, many vehicles): its own run's ids,
    # whatever they are named, hence a wildcard granted explicitly; tokens live as long as the demo.
    token = issue_token(secret, Claims(role="gateway", sub="demo-gateway", vehicles="*"), ttl_s=6 * 3600,
                        allow_wildcard=True)
    operator = issue_token(secret, Claims(role="operator", sub="demo-operator"), ttl_s=6 * 3600)
    batches = list(replay_run(run_dir, batch_frames=2000))
    total = sum(len(b["seq"]) for b in batches)
    door = None
    try:
        door = await start_front_door(runtime.backend, cfg.model_copy(update={"require_auth": True}), secret=secret,
                                      host="127.0.0.1", port=0)
        console.print(f"[green]gRPC front door on 127.0.0.1:{door.port}[/green]")
        started = time.perf_counter()
        with Progress(TextColumn("streaming fleet over gRPC"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:
            task = progress.add_task("stream", total=total)
            async with Client(f"127.0.0.1:{door.port}", token) as client:
                stats = await client.stream(paced(batches, speed), on_ack=lambda a: progress.update(task, advance=a.frames),
                                            on_alert=lambda a: progress.console.print(_judged_line(a, truth)),
                                            on_reconnect=lambda e: progress.console.print(
                                                f"[yellow]stream interrupted ({e.code().name}: {e.details()}); "
                                                "resuming from the last acknowledged seq[/yellow]"))
        elapsed = time.perf_counter() - started
        with console.status("waiting for model predictions in flight"):
            for alert in await runtime.backend.drain():
                console.print(_judged_line(alert_from_dict(alert), truth))
        async with Client(f"127.0.0.1:{door.port}", operator) as client:
            twins = await client.list_twins()
            alerts = await client.list_alerts(limit=100_000)
        for alert in alerts:
            on_alert(alert)
        return {"frames": total, "elapsed_s": elapsed, "stats": stats, "twins": twins, "alerts": alerts}
    finally:
        if door is not None:
            await door.stop()


def _judged_line(alert: dict[str, Any], truth: GroundTruth) -> str:
    ok, matched, lead = truth.judge(alert)
    verdict = f"[green]TRUE[/green] {matched}" if ok else f"[red]FALSE[/red] ({matched})"
    lead_text = f", {lead:.1f} d before failure" if lead is not None else ""
    return f"{alert_line(alert)} -> {verdict}{lead_text}"


def explanation_table(alerts: list[dict[str, Any]], truth: GroundTruth, run_dir: Path) -> Table:
    """Why each alert fired: its drivers and the closest failure-mode knowledge from the LanceDB index.

    Every alert is then remembered with its ground-truth outcome, so the next run's explanations can
    also say how similar past alerts turned out (what a reliability engineer records after a visit).
    """
    index = ExplanationIndex(run_dir / "explanations")
    table = Table(title="why alerts fired (LanceDB retrieval)")
    for column in ("vehicle", "rule", "closest known pattern", "similar past alerts", "ground truth"):
        table.add_column(column)
    for alert in alerts:
        evidence = evidence_from_alert(alert)
        explanation = index.explain(evidence)
        ok, matched, _ = truth.judge(alert)
        outcome = matched if ok else ("false alarm" if truth.verdict(alert).outcome == FALSE_ALARM else "not judged")
        best = explanation.matches[0] if explanation.matches else None
        if best is None:
            pattern = "-"
        elif best.similarity < WEAK_MATCH_SIMILARITY:
            pattern = f"no close match (nearest {best.mode}, {best.similarity:.2f})"
        else:
            pattern = f"{best.mode} ({best.similarity:.2f})"
        past = ", ".join(sorted({a.outcome for a in explanation.similar_alerts})) or "-"
        table.add_row(alert["vehicle_id"], alert["rule"], pattern, past, outcome)
        index.remember(evidence, outcome.replace(" ", "_") if not ok else matched)
    return table


def summary_table(alerts: list[dict[str, Any]], truth: GroundTruth, streamed: dict[str, Any]) -> Table:
    table = Table(title="evtwin demo: alerts against ground truth")
    for column in ("rule", "alerts", "true", "false", "median lead (d)"):
        table.add_column(column, justify="right" if column != "rule" else "left")
    by_rule: dict[str, list[tuple[str, float | None]]] = {}
    for alert in alerts:
        _, _, lead = truth.judge(alert)
        by_rule.setdefault(alert["rule"], []).append((truth.verdict(alert).outcome, lead))
    for rule, judged in sorted(by_rule.items()):
        # "false" counts false alarms only: alerts in repair time or overlapping a fault they do not match
        # are neither true nor false (configs/evaluation_metrics.md), so true + false can be below alerts.
        leads = [lead for outcome, lead in judged if outcome == FAILURE and lead is not None]
        table.add_row(rule, str(len(judged)), str(sum(o in (FAILURE, SENSOR_FAULT) for o, _ in judged)),
                      str(sum(o == FALSE_ALARM for o, _ in judged)), f"{np.median(leads):.1f}" if leads else "-")
    failing = {v for v, events in truth.failures.items() if events}
    caught = {a["vehicle_id"] for a in alerts if truth.verdict(a).outcome == FAILURE}
    table.caption = (f"{streamed['frames']:,} frames in {streamed['elapsed_s']:.1f} s "
                     f"({streamed['frames'] / max(streamed['elapsed_s'], 1e-9):,.0f} frames/s through gRPC); "
                     f"{len(streamed['twins'])} twins; failing vehicles caught {len(caught & failing)}/{len(failing)}")
    return table


def report_paths(run_dir: Path) -> list[Path]:
    found = [p for pattern in ("evaluation/**/*.md", "evaluation/**/*.png", "plots/**/*.png", "plots/**/*.md")
             for p in run_dir.glob(pattern) if p.is_file()]
    return sorted(set(found))


def run_demo(config: Config, run_dir: Path, backend: str = "ray", speed: float = 0.0, fresh: bool = False) -> int:
    started = time.perf_counter()
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    config = config.model_copy(update={"twins": config.twins.model_copy(
        update={"checkpoint_uri": str(run_dir / "checkpoints")})})
    # Beside the run, not inside: `generate --overwrite` replaces the run directory.
    config_path = run_dir.parent / f"{run_dir.name}.config.json"
    config_path.write_text(json.dumps(config.model_dump(mode="json"), indent=2))
    console.rule("[bold]evtwin demo")
    console.print(f"run directory {run_dir}; config {config_path}")
    offline = run_offline_steps(config_path, run_dir, fresh)
    if not (run_dir / "raw_frames").exists():
        console.print("[red]no generated frames: the generator is needed for the demo[/red]")
        return 1
    rules = JudgeRules.from_config(config)
    truth = replace(GroundTruth.load(run_dir), horizon_ms=rules.risk_horizon_ms, window_ms=rules.window_ms,
                    post_failure_ms=rules.post_failure_ms)
    # Twins start from scratch each demo: old checkpoints would turn the replay into duplicates.
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    console.rule("[bold]serve and stream")
    seen: dict[str, dict[str, Any]] = {}
    with console.status("starting Ray, model services and twins"):
        runtime = open_runtime(config, backend, run_dir, None, None)
    for note in runtime.notes:
        console.print(f"[dim]{note}[/dim]")
    try:
        streamed = asyncio.run(stream_fleet(config, run_dir, runtime, speed, truth,
                                            lambda a: seen.setdefault(a["alert_id"], a)))
    finally:
        runtime.shutdown()  # Serve apps, then Ray: the demo leaves no process behind
    alerts = sorted(seen.values(), key=lambda a: a["ts_ms"])
    console.rule("[bold]summary")
    Console().print(summary_table(alerts, truth, streamed))
    Console().print(explanation_table(alerts, truth, run_dir))
    steps = Table(title="steps")
    steps.add_column("step")
    steps.add_column("outcome")
    for name, outcome in offline.items():
        steps.add_row(name, outcome)
    steps.add_row("serve + stream", f"{streamed['elapsed_s']:.0f} s, {streamed['stats'].reconnects} reconnects")
    Console().print(steps)
    rules = Counter(a["rule"] for a in alerts)
    console.print(f"alerts by rule: {dict(rules)}")
    for path in report_paths(run_dir):
        Console().print(f"report: {path}")
    console.print(f"[bold green]demo finished in {time.perf_counter() - started:.0f} s[/bold green]")
    return 0
