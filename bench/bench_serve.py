"""Prediction serving: latency and rows/s over Serve gRPC, over a DeploymentHandle, and over a plain grpcio
server with the same LightGBM model (the ceiling), unbatched (1 row per request) and batched.

    .venv/bin/python bench/bench_serve.py                      # demo LightGBM on the twins' feature width
    .venv/bin/python bench/bench_serve.py --run runs/tiny_tr   # the run's trained models
    .venv/bin/python bench/bench_serve.py --rows 256 --concurrency 8 --seconds 8

Every path does the same work per row (risk for every horizon + top-3 contributions); the plain grpcio
server runs in its own process, like Serve's replica, on the same 2-core machine in the same run.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402

TOP_K = 3
ROOT = Path(__file__).resolve().parents[1]
OPERATOR_TOKEN = [""]  # issued in main once the key set exists; Serve's gRPC ingress checks it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_models(run_dir: str | None):
    if run_dir:
        from serving.deployments import load_models as load
        return load(run_dir)
    from serving.deployments import demo_models
    from training.features import FEATURE_NAMES
    return demo_models(rows=3000, feature_names=FEATURE_NAMES, seed=0)


def plain_server(run_dir: str | None, port: int, ready: mp.Event) -> None:
    """A plain grpcio PredictionService over the same model: the ceiling."""
    import grpc

    from protos.evtwin.v1 import prediction_pb2_grpc
    from serving.deployments import decode_rows, predict_risk, predict_severity, risk_response, severity_response

    failure, severity = load_models(run_dir)
    names = list(failure.feature_names)

    class Servicer(prediction_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802
            return risk_response(predict_risk(failure, decode_rows(request, names), int(request.top_k)))

        def Severity(self, request, context):  # noqa: N802
            return severity_response(predict_severity(severity, decode_rows(request, names)))

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                         options=[("grpc.max_receive_message_length", 64 << 20)])
    prediction_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    ready.set()
    server.wait_for_termination()


def measure(call: Callable[[], int], seconds: float, concurrency: int) -> dict[str, float]:
    """Run ``call`` (returns rows answered) from ``concurrency`` threads for ``seconds``; latency and rows/s."""
    latencies: list[float] = []
    rows = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker() -> None:
        local, n = [], 0
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            n += call()
            local.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(local)
            rows[0] += n

    call()  # warm-up
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {"p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "rows_per_s": rows[0] / elapsed, "requests": len(lat)}


def grpc_call(port: int, request, app: str | None) -> Callable[[], int]:
    import grpc

    from protos.evtwin.v1 import prediction_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20),
                                                                   ("grpc.max_receive_message_length", 64 << 20)])
    grpc.channel_ready_future(channel).result(timeout=60)
    stub = prediction_pb2_grpc.PredictionServiceStub(channel)
    # Serve's ingress checks the front door's tokens (an operator's here); the plain server checks nothing.
    metadata = (("application", app), ("authorization", f"Bearer {OPERATOR_TOKEN[0]}")) if app else None
    rows = len(request.vehicle_ids)

    def call() -> int:
        stub.Predict(request, metadata=metadata, timeout=60)
        return rows

    return call


def handle_call(X: np.ndarray) -> Callable[[], int]:
    from ray import serve

    from serving.deployments import APP_NAME

    handle = serve.get_deployment_handle("FailurePredictor", app_name=APP_NAME)

    def call() -> int:
        handle.predict_rows.remote(X, TOP_K).result(timeout_s=60)
        return X.shape[0]

    return call


def report(name: str, stats: dict[str, float]) -> None:
    print(f"| {name} | {stats['p50_ms']:.1f} | {stats['p99_ms']:.1f} | {stats['rows_per_s']:,.0f} | {stats['requests']:,} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=None, help="trained run dir (default: demo LightGBM models)")
    parser.add_argument("--rows", type=int, default=256, help="rows per batched request")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads for throughput")
    parser.add_argument("--seconds", type=float, default=6.0, help="per measurement")
    args = parser.parse_args()

    import ray

    from configs.settings import load_config
    from protos.evtwin.v1 import prediction_pb2
    from serving.deployments import APP_NAME, deploy_models

    failure, severity = load_models(args.run)
    names = list(failure.feature_names)
    rng = np.random.default_rng(0)
    X1 = rng.normal(size=(1, len(names))).astype(np.float32)
    Xb = rng.normal(size=(args.rows, len(names))).astype(np.float32)

    def request(X: np.ndarray):
        return prediction_pb2.PredictRequest(feature_names=names, vehicle_ids=[f"v{i}" for i in range(len(X))],
                                             values=X.ravel().tolist(), top_k=TOP_K)

    plain_port = free_port()
    ready = mp.get_context("spawn").Event()
    server = mp.get_context("spawn").Process(target=plain_server, args=(args.run, plain_port, ready), daemon=True)
    server.start()
    ready.wait(120)

    ray.init(num_cpus=2, include_dashboard=False, namespace="evtwin-bench-serve", log_to_driver=False)
    serve_port = free_port()
    secret_path = ROOT / "runs" / "bench-serve" / "auth.secret"
    config = load_config(overrides=[f"serving.serve_grpc_port={serve_port}", f"serving.serve_http_port={free_port()}",
                                    f"serving.auth_secret_path={secret_path}"])
    from serving.auth import Claims, issue_token, load_or_create_keys

    OPERATOR_TOKEN[0] = issue_token(load_or_create_keys(secret_path), Claims(role="operator", sub="bench"), ttl_s=86_400)
    from ray import serve
    try:
        if args.run:
            deploy_models(config, args.run)
        else:
            deploy_models(config, None, failure_model=failure, severity_model=severity)
        print(f"model: {'trained ' + args.run if args.run else 'demo LightGBM'}, {len(names)} features, "
              f"top-{TOP_K} contributions; batched = {args.rows} rows/request, {args.concurrency} client threads; "
              f"unbatched = 1 row/request")
        print("| path | p50 ms | p99 ms | rows/s | requests |")
        print("|---|---|---|---|---|")
        results = {}
        for label, make in (
            ("plain grpcio (ceiling)", lambda X: grpc_call(plain_port, request(X), None)),
            ("Serve gRPC ingress", lambda X: grpc_call(serve_port, request(X), APP_NAME)),
            ("Serve DeploymentHandle", handle_call),
        ):
            for mode, X, concurrency in (("unbatched, sequential", X1, 1), ("unbatched, concurrent", X1, args.concurrency),
                                         ("batched, concurrent", Xb, args.concurrency)):
                stats = measure(make(X), args.seconds, concurrency)
                results[(label, mode)] = stats
                report(f"{label}, {mode}", stats)
        ceiling = results[("plain grpcio (ceiling)", "batched, concurrent")]["rows_per_s"]
        serve_rows = results[("Serve gRPC ingress", "batched, concurrent")]["rows_per_s"]
        print(f"\nServe gRPC batched / plain grpcio batched = {serve_rows / ceiling:.2f} (target >= 0.5)")
    finally:
        serve.shutdown()
        ray.shutdown()
        server.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
