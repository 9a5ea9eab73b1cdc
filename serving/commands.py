"""CLI subcommands of the front door: serve, keys, stream, alerts, twin, explain, demo.

    evtwin keys init                                   # signing key set (<run>/keys/auth.secret)
    evtwin keys token --vehicle V0001                  # a vehicle's token (JWT, expires in --ttl-days)
    evtwin keys token --gateway depot3 --vehicles 'V00*'
    evtwin keys token --operator alice [--write]       # reads twins and alerts; --write: may stream too
    evtwin keys rotate [--previous-until 2027-01-31T00:00:00Z]   # new signing key, the old one still verifies
    evtwin keys rotate --retire                        # only the current key verifies from now on
    evtwin keys certs --out runs/keys/tls              # self-signed CA, server and client certificates
    evtwin serve --run runs/default                    # Ray + model services + twins + gRPC on :50151
    evtwin stream --run runs/default --speed 600       # replay a run at 600x real time
    evtwin alerts --follow
    evtwin alerts --state open --state acknowledged    # only alerts in these lifecycle states
    evtwin alerts ack ALERT_ID                         # operator token with --write (the local one has it)
    evtwin alerts assign ALERT_ID --assignee carol
    evtwin alerts resolve ALERT_ID --outcome confirmed_failure --mode coolant_pump --note "pump seized"
    evtwin twin V0001
    evtwin explain 3f2a9c0d1e4b5a67                    # likely causes of an alert, with their evidence
    evtwin status [--json]                             # streams, twins, alerts by state, models, drift
    evtwin report --run runs/default                   # the fleet report: runs/default/report.html
    evtwin drift --run runs/default [--live runs/other] # PSI of the inputs against the training reference
    evtwin demo
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from configs.alert_states import OUTCOMES, STATES, AlertStateLog
from configs.catalog import load_catalog
from configs.cli import add_config_arguments, config_from_args
from configs.settings import Config
from protos.evtwin.v1 import explain_pb2, explain_pb2_grpc
from serving.app import open_runtime, resolve_run_paths
from serving.auth import Claims, KeySetFile, issue_token, load_keys, load_or_create_keys, retire_previous_keys, rotate_keys
from serving.catalog_source import catalog_batches, describe_report
from serving.client import Client
from serving.demo import run_demo
from serving.drift import run_drift
from serving.keys import issue_test_certificates
from serving.outcomes import OutcomeIndexer
from serving.report import write_report
from serving.server import serve_until_signal, start_front_door, startup_refusals
from serving.sources import live_fleet, paced, replay_run
from serving.status import gather_status, status_table
from serving.terminal import alert_line
from training.drift import DEFAULT_ALERT_LEVEL

console = Console(stderr=True)
out = Console()
ALERT_ACTIONS: dict[str, str] = {"list": "", "ack": "acknowledge", "assign": "assign", "resolve": "resolve"}


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="start (or join) Ray, deploy models and twins, serve the gRPC API")
    add_config_arguments(serve)
    serve.add_argument("--run", default=None, help="run directory with trained models (default runs/<run_name>)")
    serve.add_argument("--address", default=None, help="join this Ray cluster instead of starting one")
    serve.add_argument("--backend", choices=("ray", "local", "memory"), default="ray")
    serve.add_argument("--port", type=int, default=None, help="gRPC port (default serving.grpc_port; 0 = any free)")
    serve.add_argument("--insecure", action="store_true",
                       help="start despite a readable secret file, plaintext on a non-loopback address or auth off")
    serve.set_defaults(func=cmd_serve)

    keys = subparsers.add_parser("keys", help="signing keys, tokens and test certificates")
    add_config_arguments(keys)
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    init = keys_sub.add_parser("init", help="create the signing key set if it does not exist")
    init.set_defaults(func=cmd_keys_init)
    token = keys_sub.add_parser("token", help="print a signed token (JWT)")
    who = token.add_mutually_exclusive_group(required=True)
    who.add_argument("--vehicle", help="a token that writes only this vehicle")
    who.add_argument("--gateway", help="a gateway token (with --vehicles PATTERN)")
    who.add_argument("--operator", help="an operator token (queries, alert streams; writes only with --write)")
    token.add_argument("--vehicles", default="", help="gateway: fnmatch pattern of vehicle ids, e.g. 'V00*'")
    token.add_argument("--allow-wildcard", action="store_true",
                       help="gateway: accept a pattern with no literal prefix ('*': every vehicle)")
    token.add_argument("--write", action="store_true", help="operator: may also write telemetry of any vehicle")
    token.add_argument("--ttl-days", type=float, default=30.0,
                       help="expiry in days (> 0, at most serving.token_max_ttl_days; default 30)")
    token.set_defaults(func=cmd_keys_token)
    rotate = keys_sub.add_parser("rotate", help="add a new signing key; previous keys verify until a time or --retire")
    rotate.add_argument("--previous-until", default=None,
                        help="UTC time (ISO 8601) after which the previous keys stop verifying (default: until --retire)")
    rotate.add_argument("--retire", action="store_true",
                        help="add no key: retire every key but the current one (tokens they signed stop working)")
    rotate.set_defaults(func=cmd_keys_rotate)
    for sub in (init, token, rotate):
        sub.add_argument("--run", default=None,
                         help="run directory whose keys/auth.secret is used, as `evtwin serve --run` (default runs/<run_name>)")
    certs = keys_sub.add_parser("certs", help="write a self-signed CA, server and client certificates (testing)")
    certs.add_argument("--out", default="runs/keys/tls")
    certs.add_argument("--hosts", default="localhost,127.0.0.1", help="server certificate names, comma separated")
    certs.set_defaults(func=cmd_keys_certs)

    for name, helptext in (("stream", "stream frames to the server (replay a run or live from the generator)"),
                           ("alerts", "list alerts, or follow them as they are raised"),
                           ("twin", "show one twin's state"),
                           ("explain", "why an alert fired: likely causes with their evidence, or none"),
                           ("status", "streams, twins, alerts by state, model versions, drift at a glance")):
        parser = subparsers.add_parser(name, help=helptext)
        add_config_arguments(parser)
        _add_connection_arguments(parser)
        if name == "stream":
            parser.add_argument("--run", default=None, help="run directory to replay (default runs/<run_name>)")
            parser.add_argument("--live", action="store_true", help="frames straight from the generator, not Parquet")
            parser.add_argument("--vehicles", default="", help="comma-separated vehicle ids (default: all)")
            parser.add_argument("--speed", type=float, default=0.0, help="1 = real time, N = N x faster, 0 = flat out")
            parser.add_argument("--batch-frames", type=int, default=1000)
            parser.add_argument("--catalog", default=None, help="signal catalog: stream INPUT files of a real fleet")
            parser.add_argument("--model", default=None, help="vehicle model in the catalog (default: its 'default')")
            parser.add_argument("inputs", nargs="*", help="with --catalog: CSV/Parquet files to stream")
            parser.set_defaults(func=cmd_stream)
        elif name == "alerts":
            parser.add_argument("action", nargs="?", choices=ALERT_ACTIONS, default="list",
                                help="list (default), or change one alert's lifecycle")
            parser.add_argument("alert_id", nargs="?", default="", help="ack/assign/resolve: the alert's id")
            parser.add_argument("--assignee", default="", help="assign: who works the alert")
            parser.add_argument("--outcome", default="", choices=("", *OUTCOMES), help="resolve: what was found")
            parser.add_argument("--mode", default="", help="resolve --outcome confirmed_failure: the failure mode")
            parser.add_argument("--note", default="", help="ack/assign/resolve: free text")
            parser.add_argument("--follow", action="store_true", help="keep streaming new alerts")
            parser.add_argument("--vehicle", default="")
            parser.add_argument("--rule", default="")
            parser.add_argument("--since-ms", type=int, default=0)
            parser.add_argument("--min-severity", type=int, default=0)
            parser.add_argument("--state", action="append", default=[], choices=STATES,
                                help="list/follow only alerts in this lifecycle state (repeat for several)")
            parser.add_argument("--limit", type=int, default=50)
            parser.set_defaults(func=cmd_alerts)
        elif name == "explain":
            parser.add_argument("alert_id")
            parser.add_argument("--causes", type=int, default=0, help="causes to rank (default: the server's, 3)")
            parser.add_argument("--json", action="store_true", help="print the explanation as JSON")
            parser.set_defaults(func=cmd_explain)
        elif name == "status":
            parser.add_argument("--json", action="store_true", help="print the status as JSON")
            parser.add_argument("--metrics-url", default=None,
                                help="front door metrics (default http://serving.host:serving.metrics_port/metrics)")
            parser.set_defaults(func=cmd_status)
        else:
            parser.add_argument("vehicle_id")
            parser.add_argument("--json", action="store_true", help="print the summary as JSON")
            parser.set_defaults(func=cmd_twin)
        if name != "stream":  # stream's --run is the run it replays, and also where the local token comes from
            parser.add_argument("--run", default=None,
                                help="run directory of the local server, whose key set mints a local token")

    report = subparsers.add_parser("report", help="the fleet report: one self-contained HTML file")
    add_config_arguments(report)
    report.add_argument("--run", required=True, help="run directory (its checkpoints, alerts, drift, what-if)")
    report.add_argument("--out", default=None, help="HTML file to write (default <run>/report.html)")
    report.set_defaults(func=cmd_report)

    drift = subparsers.add_parser("drift", help="PSI of a run's windows against the models' training reference")
    add_config_arguments(drift)
    drift.add_argument("--run", required=True, help="run directory holding the trained models (and its reference)")
    drift.add_argument("--live", default=None, help="prepared run to judge (default: --run's test split)")
    drift.add_argument("--alert-level", type=float, default=DEFAULT_ALERT_LEVEL,
                       help=f"PSI above which a model_drift alert is raised (default {DEFAULT_ALERT_LEVEL})")
    drift.set_defaults(func=cmd_drift)

    demo = subparsers.add_parser("demo", help="the whole product end to end on the default config (< 10 min)")
    add_config_arguments(demo)
    demo.add_argument("--run", default=None, help="run directory (default runs/demo)")
    demo.add_argument("--speed", type=float, default=0.0, help="stream at N x real time (0 = as fast as possible)")
    demo.add_argument("--backend", choices=("ray", "local", "memory"), default="ray")
    demo.add_argument("--fresh", action="store_true", help="regenerate and retrain even if the run exists")
    demo.set_defaults(func=cmd_demo)


# ------------------------------------------------------------------------------------------- helpers
def _config(args: argparse.Namespace) -> Config:
    return config_from_args(args)


def _run_dir(args: argparse.Namespace, config: Config) -> Path:
    return Path(args.run) if getattr(args, "run", None) else Path("runs") / config.run_name


def _secret_path(args: argparse.Namespace, config: Config) -> Path:
    """The key-set file: serving.auth_secret_path when set, else <run>/keys/auth.secret (never the cwd's)."""

    return Path(resolve_run_paths(config, _run_dir(args, config)).serving.auth_secret_path)


def _add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", default=None, help="host:port (default serving.host:serving.grpc_port)")
    parser.add_argument("--token", default=os.environ.get("EVTWIN_TOKEN"), help="bearer token (or $EVTWIN_TOKEN)")
    parser.add_argument("--ca", default=None, help="CA certificate: use TLS")
    parser.add_argument("--cert", default=None, help="client certificate (mutual TLS)")
    parser.add_argument("--key", default=None, help="client key (mutual TLS)")


def _local_token(path: Path) -> str | None:
    """Convenience on the server's own machine: an operator token valid for one hour, if the key set is readable."""
    if not os.access(path, os.R_OK):
        return None
    return issue_token(load_keys(path), Claims(role="operator", sub=f"local-{os.getuid()}", write=True), ttl_s=3600)


def _client(args: argparse.Namespace, config: Config) -> Any:
    cfg = config.serving
    target = args.target or f"{cfg.host}:{cfg.grpc_port}"
    token = args.token or _local_token(_secret_path(args, config))
    return Client(target, token, ca_path=args.ca, cert_path=args.cert, key_path=args.key,
                  max_message_bytes=cfg.max_message_bytes)


# ------------------------------------------------------------------------------------------- keys
def cmd_keys_init(args: argparse.Namespace) -> int:
    path = _secret_path(args, _config(args))
    existed = path.exists()
    keys = load_or_create_keys(path)
    console.print(f"key set {'exists' if existed else 'created'}: {path} (current key {keys.current})")
    return 0


def cmd_keys_token(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.write and not args.operator:
        console.print("[red]--write[/red] applies to operator tokens only (vehicles and gateways write their own)")
        return 2
    if args.vehicle:
        claims = Claims(role="vehicle", sub=args.vehicle)
    elif args.gateway:
        claims = Claims(role="gateway", sub=args.gateway, vehicles=args.vehicles)
    else:
        claims = Claims(role="operator", sub=args.operator, write=args.write)
    try:
        token = issue_token(load_or_create_keys(_secret_path(args, config)), claims, ttl_s=args.ttl_days * 86_400,
                            max_ttl_s=config.serving.token_max_ttl_days * 86_400, allow_wildcard=args.allow_wildcard)
    except ValueError as error:
        console.print(f"[red]refused[/red]: {error}")
        return 2
    out.print(token, soft_wrap=True)
    return 0


def _utc_seconds(text: str) -> float:
    import datetime as dt

    moment = dt.datetime.fromisoformat(text)  # Python 3.11 reads a trailing Z as UTC
    if moment.tzinfo is None:
        raise ValueError(f"--previous-until={text!r}: give a time zone (e.g. 2027-01-31T00:00:00Z)")
    return moment.timestamp()


def cmd_keys_rotate(args: argparse.Namespace) -> int:


    path = _secret_path(args, _config(args))
    if not path.exists():
        console.print(f"[red]no key set at {path}[/red]: run `evtwin keys init` first")
        return 2
    if args.retire:
        if args.previous_until:
            console.print("[red]--retire and --previous-until exclude each other[/red]")
            return 2
        keys = retire_previous_keys(path)
        console.print(f"retired every key but {keys.current}: tokens signed by others no longer verify")
    else:
        try:
            until = _utc_seconds(args.previous_until) if args.previous_until else None
        except ValueError as error:
            console.print(f"[red]refused[/red]: {error}")
            return 2
        keys = rotate_keys(path, time.time(), until)
        when = args.previous_until or "`evtwin keys rotate --retire`"
        console.print(f"new signing key {keys.current}; previous keys verify until {when}")
    console.print("running front doors pick the change up within seconds (Serve's gRPC ingress: on redeploy)")
    return 0


def cmd_keys_certs(args: argparse.Namespace) -> int:
    paths = issue_test_certificates(args.out, [h.strip() for h in args.hosts.split(",") if h.strip()])
    for name, path in vars(paths).items():
        console.print(f"{name:12s} {path}")
    console.print("serve with: --set serving.tls_cert_path=... --set serving.tls_key_path=... "
                  "[--set serving.tls_client_ca_path=ca.pem for mutual TLS]")
    return 0


# ------------------------------------------------------------------------------------------- serve
def cmd_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_dir = _run_dir(args, _config(args))
    config = resolve_run_paths(_config(args), run_dir)
    cfg = config.serving
    refusals = startup_refusals(cfg)
    for reason in refusals:
        console.print(f"[{'yellow' if args.insecure else 'red'}]{'insecure' if args.insecure else 'refused'}[/]: {reason}")
    if refusals and not args.insecure:
        console.print("not starting; fix the above, or start anyway with --insecure")
        return 2
    secret = None
    if cfg.require_auth:
        load_or_create_keys(cfg.auth_secret_path)
        secret = KeySetFile(cfg.auth_secret_path)  # re-read after `evtwin keys rotate`, no restart needed
    with console.status("starting twins and model services"):
        runtime = open_runtime(config, args.backend, run_dir if run_dir.exists() else None, args.address)
    for note in runtime.notes:
        console.print(f"[dim]{note}[/dim]")

    async def main() -> int:
        alert_states = AlertStateLog(config.twins.checkpoint_uri)
        alert_states.subscribe(OutcomeIndexer(run_dir / "explanations"))  # resolved alerts explain new ones
        door = await start_front_door(runtime.backend, cfg, secret=secret, port=args.port, alert_states=alert_states)
        scheme = "TLS" if cfg.tls_cert_path else "plaintext"
        console.print(f"[green]gRPC front door on {cfg.host}:{door.port}[/green] ({scheme}, "
                      f"auth {'on' if cfg.require_auth else 'OFF'}); SIGTERM or Ctrl-C stops gracefully")
        return await serve_until_signal(door)

    try:
        return asyncio.run(main())
    finally:
        runtime.shutdown()


# ------------------------------------------------------------------------------------------- clients
def cmd_stream(args: argparse.Namespace) -> int:
    config = _config(args)
    vehicles = [v for v in args.vehicles.split(",") if v] or None
    if args.catalog or args.inputs:
        if not args.catalog:
            raise ValueError(f"input files {args.inputs} need --catalog (how their signals map to the contract)")
        if args.live:
            raise ValueError("--live streams the generator and --catalog streams files: choose one")
        batches, report = catalog_batches(load_catalog(args.catalog).profile(args.model), args.inputs, vehicles,
                                          args.batch_frames)
        total = sum(len(b["seq"]) for b in batches)
        console.print(describe_report(report))
    elif args.live:
        batches = live_fleet(config, vehicles, args.batch_frames)
        total = None
    else:
        batches = list(replay_run(_run_dir(args, config), vehicles, args.batch_frames))
        total = sum(len(b["seq"]) for b in batches)

    async def main() -> int:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.fields[info]}"), console=console) as progress:
            task = progress.add_task("streaming frames", total=total, info="")

            def on_ack(ack: Any) -> None:
                progress.update(task, advance=ack.frames)

            def on_alert(alert: dict[str, Any]) -> None:
                progress.console.print(alert_line(alert))

            async with _client(args, config) as client:
                stats = await client.stream(paced(batches, args.speed), on_ack=on_ack, on_alert=on_alert,
                                            on_reconnect=lambda e: progress.console.print(
                                                f"[yellow]stream interrupted ({e.code().name}: {e.details()}); "
                                                "resuming[/yellow]"),
                                            raise_on_reject=False)
            progress.update(task, info=f"{stats.reconnects} reconnects")
        console.print(f"sent {stats.frames_sent} frames, durable {stats.frames_acked}, duplicates {stats.duplicates}, "
                      f"sensor faults {stats.sensor_faults}, alerts {len(stats.alerts)}, reconnects {stats.reconnects}")
        if stats.rejected:  # refused frames are not delivered: say so, and fail
            first = stats.rejected[0]
            console.print(f"[red]refused by the server: {stats.rejected_by_reason}[/red] (first: {first['vehicle_id']} "
                          f"seq {first['seq']}: {first['message']})")
            return 1
        return 0

    return asyncio.run(main())


def _lifecycle_text(alert: dict[str, Any]) -> str:
    life = alert.get("lifecycle") or {}
    state = life.get("state") or "open"
    extra = life.get("assignee") if state == "assigned" else life.get("outcome") if state == "resolved" else ""
    return f"[dim]{alert['alert_id']} {state}{' ' + extra if extra else ''}[/dim]"


def cmd_alerts(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.action != "list":
        if not args.alert_id:
            console.print(f"[red]evtwin alerts {args.action}[/red] needs the alert id (shown by `evtwin alerts`)")
            return 2
        fields = {"vehicle_id": args.vehicle, "assignee": args.assignee, "outcome": args.outcome, "mode": args.mode,
                  "note": args.note}

        async def change() -> int:
            async with _client(args, config) as client:
                alert = await client.change_alert(ALERT_ACTIONS[args.action], args.alert_id, **fields)
            out.print(f"{alert_line(alert)} {_lifecycle_text(alert)}", soft_wrap=True)
            return 0

        return _run_rpc(change)
    filters = {"vehicle_id": args.vehicle, "rule": args.rule, "since_ms": args.since_ms, "min_severity": args.min_severity,
               "states": args.state}

    async def main() -> int:
        async with _client(args, config) as client:
            for alert in await client.list_alerts(limit=args.limit, **filters):
                out.print(f"{alert_line(alert)} {_lifecycle_text(alert)}", soft_wrap=True)
            if args.follow:
                async for alert in client.watch_alerts(**filters):
                    out.print(f"{alert_line(alert)} {_lifecycle_text(alert)}", soft_wrap=True)
        return 0

    return _run_rpc(main)


def cmd_status(args: argparse.Namespace) -> int:
    config = _config(args)
    cfg = config.serving
    metrics_url = args.metrics_url or (f"http://{cfg.host}:{cfg.metrics_port}/metrics" if cfg.metrics_port else None)
    run_dir = _run_dir(args, config)

    async def main() -> int:
        async with _client(args, config) as client:
            status = await gather_status(client, run_dir if run_dir.is_dir() else None, metrics_url)
        if args.json:
            out.print_json(json.dumps(status))
        else:
            out.print(status_table(status))
        return 0

    return _run_rpc(main)


def cmd_twin(args: argparse.Namespace) -> int:
    config = _config(args)

    async def main() -> int:
        async with _client(args, config) as client:
            summary = await client.get_twin(args.vehicle_id)
        if args.json:
            out.print_json(json.dumps(MessageToDict(summary, preserving_proto_field_name=True)))
            return 0
        table = Table(title=f"twin {summary.vehicle_id}")
        table.add_column("field")
        table.add_column("value")
        for name in ("applied_seq", "acked_seq", "last_ts_ms", "frames_applied", "windows_closed", "anomaly_score",
                     "head_version", "sensor_faults"):
            table.add_row(name, str(getattr(summary, name)))
        for risk in summary.risk:
            table.add_row(f"risk {risk.horizon_days} d", f"{risk.probability:.3f}")
        table.add_row("open alerts", str(len(summary.open_alerts)))
        out.print(table)
        return 0

    return _run_rpc(main)


def explanation_lines(reply: explain_pb2.Explanation) -> list[str]:
    """An Explain reply for a terminal: drivers, then each cause with its support, evidence and citations."""
    lines = [f"alert {reply.alert_id} ({reply.rule}) on {reply.vehicle_id}"]
    for driver in reply.drivers:
        state = "" if driver.sent else "  [not sent by this vehicle: not used]"
        lines.append(f"  driver {driver.name} {driver.weight:+.3g} -> {', '.join(driver.fields) or '?'}{state}")
    if not reply.supported:
        lines.append(f"no supported explanation: no first cause with support {reply.min_support:.2f} covering "
                     f"{reply.min_coverage:.0%} of the evidence{'; candidates only:' if reply.causes else '.'}")
    for rank, cause in enumerate(reply.causes, start=1):
        lines.append(f"{rank}. {cause.title} [{cause.cause}] support {cause.support:.2f}, covers {cause.coverage:.0%} "
                     f"(by {', '.join(cause.retrievers) or '-'}; fields {', '.join(cause.matched_fields) or '-'})")
        lines.append(f"   check: {cause.recommended_check}")
        lines.append(f"   sources: {', '.join(p.passage_id for p in cause.passages)}")
        if cause.similar:
            lines.append(f"   similar past alerts with this outcome: {len(cause.similar)} "
                         f"(nearest {cause.similar[0].alert_id}, similarity {cause.similar[0].similarity:.2f})")
    if reply.similar:
        outcomes: dict[str, int] = {}
        for past in reply.similar:
            outcomes[past.outcome] = outcomes.get(past.outcome, 0) + 1
        lines.append("similar past alerts: " + ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items(), key=lambda x: -x[1])))
    return lines


def cmd_explain(args: argparse.Namespace) -> int:
    config = _config(args)

    async def main() -> int:
        async with _client(args, config) as client:
            stub = explain_pb2_grpc.ExplainServiceStub(client.channel)
            reply = await stub.Explain(explain_pb2.ExplainRequest(alert_id=args.alert_id, max_causes=args.causes),
                                       metadata=client.metadata)
        if args.json:
            out.print_json(json.dumps(MessageToDict(reply, preserving_proto_field_name=True)))
        else:
            for line in explanation_lines(reply):
                out.print(line, markup=False, highlight=False)
        return 0

    return _run_rpc(main)


def _run_rpc(main: Any) -> int:
    try:
        return asyncio.run(main())
    except grpc.aio.AioRpcError as error:
        console.print(f"[red]{error.code().name}[/red]: {error.details()}")
        return 1


def cmd_report(args: argparse.Namespace) -> int:
    run_dir = Path(args.run)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"--run {run_dir}: no such run directory")
    config = resolve_run_paths(_config(args), run_dir)
    started = time.perf_counter()
    path = write_report(run_dir, config, config.twins.checkpoint_uri, args.out or run_dir / "report.html")
    console.print(f"report written: {path} ({path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - started:.1f} s)")
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    live = Path(args.live) if args.live else Path(args.run)
    config = resolve_run_paths(_config(args), live)
    result = run_drift(args.run, config, config.twins.checkpoint_uri, args.live, args.alert_level)
    table = Table(title=f"drift of {live} against {args.run} (PSI; {result['windows']} windows)")
    table.add_column("input")
    table.add_column("PSI", justify="right")
    for feature in result["features"][:10]:
        table.add_row(feature["feature"], f"{feature['psi']:.3f}")
    for name, value in result["score_psi"].items():
        table.add_row(f"score {name}", f"{value:.3f}")
    for group, part in result.get("by_profile", {}).items():
        table.add_row(f"profile {group}", f"{part['level']:.3f} ({part['worst_feature']})")
    out.print(table)
    console.print(f"level {result['level']:.3f} (alert above {args.alert_level}); {len(result['alerts'])} model_drift "
                  f"alerts; written {live / 'drift'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    config = _config(args)
    run_dir = Path(args.run) if args.run else Path("runs") / "demo"
    return run_demo(config, run_dir, backend=args.backend, speed=args.speed, fresh=args.fresh)
