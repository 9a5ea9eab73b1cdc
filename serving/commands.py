"""CLI subcommands of the front door: serve, keys, stream, alerts, twin, demo.

    evtwin keys init                                   # HMAC secret (serving.auth_secret_path)
    evtwin keys token --vehicle V0001                  # a vehicle's token
    evtwin keys token --gateway depot3 --vehicles 'V00*'
    evtwin keys certs --out runs/keys/tls              # self-signed CA, server and client certificates
    evtwin serve --run runs/default                    # Ray + model services + twins + gRPC on :50151
    evtwin stream --run runs/default --speed 600       # replay a run at 600x real time
    evtwin alerts --follow
    evtwin twin V0001
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

from rich.console import Console
from rich.table import Table

from configs.catalog import load_catalog
from configs.settings import Config, ServingConfig

console = Console(stderr=True)
out = Console()


def register(subparsers: argparse._SubParsersAction) -> None:
    from serving.cli import add_config_arguments

    serve = subparsers.add_parser("serve", help="start (or join) Ray, deploy models and twins, serve the gRPC API")
    add_config_arguments(serve)
    serve.add_argument("--run", default=None, help="run directory with trained models (default runs/<run_name>)")
    serve.add_argument("--address", default=None, help="join this Ray cluster instead of starting one")
    serve.add_argument("--backend", choices=("ray", "local", "memory"), default="ray")
    serve.add_argument("--port", type=int, default=None, help="gRPC port (default serving.grpc_port; 0 = any free)")
    serve.set_defaults(func=cmd_serve)

    keys = subparsers.add_parser("keys", help="issue tokens and test certificates")
    add_config_arguments(keys)
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    init = keys_sub.add_parser("init", help="create the HMAC secret if it does not exist")
    init.set_defaults(func=cmd_keys_init)
    token = keys_sub.add_parser("token", help="print a signed token")
    who = token.add_mutually_exclusive_group(required=True)
    who.add_argument("--vehicle", help="a token that writes only this vehicle")
    who.add_argument("--gateway", help="a gateway token (with --vehicles PATTERN)")
    who.add_argument("--operator", help="an operator token (queries, alert streams, any vehicle)")
    token.add_argument("--vehicles", default="", help="gateway: fnmatch pattern of vehicle ids, e.g. 'V00*'")
    token.add_argument("--ttl-days", type=float, default=0, help="expiry in days (0 = never)")
    token.set_defaults(func=cmd_keys_token)
    certs = keys_sub.add_parser("certs", help="write a self-signed CA, server and client certificates (testing)")
    certs.add_argument("--out", default="runs/keys/tls")
    certs.add_argument("--hosts", default="localhost,127.0.0.1", help="server certificate names, comma separated")
    certs.set_defaults(func=cmd_keys_certs)

    for name, helptext in (("stream", "stream frames to the server (replay a run or live from the generator)"),
                           ("alerts", "list alerts, or follow them as they are raised"),
                           ("twin", "show one twin's state")):
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
            parser.add_argument("--follow", action="store_true", help="keep streaming new alerts")
            parser.add_argument("--vehicle", default="")
            parser.add_argument("--rule", default="")
            parser.add_argument("--since-ms", type=int, default=0)
            parser.add_argument("--min-severity", type=int, default=0)
            parser.add_argument("--limit", type=int, default=50)
            parser.set_defaults(func=cmd_alerts)
        else:
            parser.add_argument("vehicle_id")
            parser.add_argument("--json", action="store_true", help="print the summary as JSON")
            parser.set_defaults(func=cmd_twin)

    demo = subparsers.add_parser("demo", help="the whole product end to end on the default config (< 10 min)")
    add_config_arguments(demo)
    demo.add_argument("--run", default=None, help="run directory (default runs/demo)")
    demo.add_argument("--speed", type=float, default=0.0, help="stream at N x real time (0 = as fast as possible)")
    demo.add_argument("--backend", choices=("ray", "local", "memory"), default="ray")
    demo.add_argument("--fresh", action="store_true", help="regenerate and retrain even if the run exists")
    demo.set_defaults(func=cmd_demo)


# ------------------------------------------------------------------------------------------- helpers
def _config(args: argparse.Namespace) -> Config:
    from serving.cli import config_from_args

    return config_from_args(args)


def _run_dir(args: argparse.Namespace, config: Config) -> Path:
    return Path(args.run) if getattr(args, "run", None) else Path("runs") / config.run_name


def _add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", default=None, help="host:port (default serving.host:serving.grpc_port)")
    parser.add_argument("--token", default=os.environ.get("EVTWIN_TOKEN"), help="bearer token (or $EVTWIN_TOKEN)")
    parser.add_argument("--ca", default=None, help="CA certificate: use TLS")
    parser.add_argument("--cert", default=None, help="client certificate (mutual TLS)")
    parser.add_argument("--key", default=None, help="client key (mutual TLS)")


def _local_token(cfg: ServingConfig) -> str | None:
    """Convenience on the server's own machine: an operator token valid for one hour, if the secret is readable."""
    from serving.auth import Claims, issue_token

    path = Path(cfg.auth_secret_path)
    if not path.exists():
        return None
    secret = bytes.fromhex(path.read_text().strip())
    return issue_token(secret, Claims(role="operator", sub=f"local-{os.getuid()}", exp=int(time.time()) + 3600))


def _client(args: argparse.Namespace, config: Config) -> Any:
    from serving.client import Client

    cfg = config.serving
    target = args.target or f"{cfg.host}:{cfg.grpc_port}"
    token = args.token or _local_token(cfg)
    return Client(target, token, ca_path=args.ca, cert_path=args.cert, key_path=args.key,
                  max_message_bytes=cfg.max_message_bytes)


# ------------------------------------------------------------------------------------------- keys
def cmd_keys_init(args: argparse.Namespace) -> int:
    from serving.auth import load_or_create_secret

    path = Path(_config(args).serving.auth_secret_path)
    existed = path.exists()
    load_or_create_secret(path)
    console.print(f"auth secret {'exists' if existed else 'created'}: {path}")
    return 0


def cmd_keys_token(args: argparse.Namespace) -> int:
    from serving.auth import Claims, issue_token, load_or_create_secret

    secret = load_or_create_secret(_config(args).serving.auth_secret_path)
    exp = int(time.time() + args.ttl_days * 86400) if args.ttl_days else 0
    if args.vehicle:
        claims = Claims(role="vehicle", sub=args.vehicle, exp=exp)
    elif args.gateway:
        claims = Claims(role="gateway", sub=args.gateway, vehicles=args.vehicles, exp=exp)
    else:
        claims = Claims(role="operator", sub=args.operator, exp=exp)
    out.print(issue_token(secret, claims), soft_wrap=True)
    return 0


def cmd_keys_certs(args: argparse.Namespace) -> int:
    from serving.keys import issue_test_certificates

    paths = issue_test_certificates(args.out, [h.strip() for h in args.hosts.split(",") if h.strip()])
    for name, path in vars(paths).items():
        console.print(f"{name:12s} {path}")
    console.print("serve with: --set serving.tls_cert_path=... --set serving.tls_key_path=... "
                  "[--set serving.tls_client_ca_path=ca.pem for mutual TLS]")
    return 0


# ------------------------------------------------------------------------------------------- serve
def cmd_serve(args: argparse.Namespace) -> int:
    from serving.app import open_runtime
    from serving.auth import load_or_create_secret
    from serving.server import serve_until_signal, start_front_door

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = _config(args)
    cfg = config.serving
    run_dir = _run_dir(args, config)
    secret = load_or_create_secret(cfg.auth_secret_path) if cfg.require_auth else None
    with console.status("starting twins and model services"):
        runtime = open_runtime(config, args.backend, run_dir if run_dir.exists() else None, args.address)
    for note in runtime.notes:
        console.print(f"[dim]{note}[/dim]")

    async def main() -> int:
        door = await start_front_door(runtime.backend, cfg, secret=secret, port=args.port)
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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from serving.sources import live_fleet, paced, replay_run

    config = _config(args)
    vehicles = [v for v in args.vehicles.split(",") if v] or None
    if args.catalog or args.inputs:
        from serving.catalog_source import catalog_batches, describe_report

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
                progress.console.print(_alert_line(alert))

            async with _client(args, config) as client:
                stats = await client.stream(paced(batches, args.speed), on_ack=on_ack, on_alert=on_alert,
                                            on_reconnect=lambda e: progress.console.print(
                                                f"[yellow]stream interrupted ({e.code().name}: {e.details()}); resuming[/yellow]"))
            progress.update(task, info=f"{stats.reconnects} reconnects")
        console.print(f"sent {stats.frames_sent} frames, durable {stats.frames_acked}, duplicates {stats.duplicates}, "
                      f"sensor faults {stats.sensor_faults}, alerts {len(stats.alerts)}, reconnects {stats.reconnects}")
        return 0

    return asyncio.run(main())


def _alert_line(alert: dict[str, Any]) -> str:
    ts = time.strftime("%Y-%m-%d %H:%M", time.gmtime(alert["ts_ms"] / 1000))
    if alert["rule"] == "failure_risk":  # LightGBM contributions, in log-odds
        signals = ", ".join(f"{name} {value:+.2f}" for name, value in alert["signals"][:3])
    else:  # shares of the reconstruction error (or of the faulty fields)
        signals = ", ".join(f"{name} {share:.0%}" for name, share in alert["signals"][:3])
    mode = f" [{alert['mode']}]" if alert.get("mode") else ""
    return f"[yellow]ALERT[/yellow] {ts} {alert['vehicle_id']} {alert['rule']}{mode} score {alert['score']:.2f}: {signals}"


def cmd_alerts(args: argparse.Namespace) -> int:
    config = _config(args)
    filters = {"vehicle_id": args.vehicle, "rule": args.rule, "since_ms": args.since_ms, "min_severity": args.min_severity}

    async def main() -> int:
        async with _client(args, config) as client:
            for alert in await client.list_alerts(limit=args.limit, **filters):
                out.print(_alert_line(alert))
            if args.follow:
                async for alert in client.watch_alerts(**filters):
                    out.print(_alert_line(alert))
        return 0

    return _run_rpc(main)


def cmd_twin(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToDict

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


def _run_rpc(main: Any) -> int:
    import grpc

    try:
        return asyncio.run(main())
    except grpc.aio.AioRpcError as error:
        console.print(f"[red]{error.code().name}[/red]: {error.details()}")
        return 1


def cmd_demo(args: argparse.Namespace) -> int:
    from serving.demo import run_demo

    config = _config(args)
    run_dir = Path(args.run) if args.run else Path("runs") / "demo"
    return run_demo(config, run_dir, backend=args.backend, speed=args.speed, fresh=args.fresh)
