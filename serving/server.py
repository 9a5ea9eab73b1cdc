"""The gRPC front door: a grpc.aio server with auth, TLS, limits, health, reflection and a graceful stop.

    door = await start_front_door(MemoryFleet(), cfg.serving, secret=secret, port=0)
    ...  # door.port is the bound port
    await door.stop()   # health NOT_SERVING, streams drain, twins checkpoint, server stops

``serve_forever`` is what ``evtwin serve`` runs: it stops gracefully on SIGTERM/SIGINT and returns 0.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import message_factory
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from configs.alert_states import AlertStateLog
from configs.settings import ServingConfig
from protos.evtwin.v1 import alerts_pb2, explain_pb2, telemetry_pb2, twin_pb2
from serving.auth import AuthError, Claims, KeySet, KeySetFile, bearer_token, verify_token
from serving.backend import FleetBackend
from serving.codec import BatchLimits, safe_parser
from serving.explain_service import ExplainServicer
from serving.metrics import FrontDoorMetrics, start_metrics_server
from serving.servicers import CURRENT_CLAIMS, AlertHub, AlertServicer, SessionRegistry, TelemetryServicer, TwinServicer

log = logging.getLogger(__name__)

SERVICE_NAMES: tuple[str, ...] = (
    telemetry_pb2.DESCRIPTOR.services_by_name["TelemetryService"].full_name,
    twin_pb2.DESCRIPTOR.services_by_name["TwinService"].full_name,
    alerts_pb2.DESCRIPTOR.services_by_name["AlertService"].full_name,
    explain_pb2.DESCRIPTOR.services_by_name["ExplainService"].full_name,
)
# Standard tooling (grpcurl, load balancers) must reach these without credentials.
PUBLIC_PREFIXES: tuple[str, ...] = ("/grpc.health.v1.", "/grpc.reflection.")


def register_servicer(server: grpc.aio.Server, service: Any, servicer: Any) -> None:
    """Like the generated ``add_*Servicer_to_server``, but request bytes that do not parse reach the servicer
    as ``Unparseable`` (answered INVALID_ARGUMENT) instead of becoming gRPC's generic INTERNAL error."""
    handlers = {}
    for method in service.methods:
        request_type = message_factory.GetMessageClass(method.input_type)
        response_type = message_factory.GetMessageClass(method.output_type)
        if method.client_streaming and method.server_streaming:
            make = grpc.stream_stream_rpc_method_handler
        elif method.server_streaming:
            make = grpc.unary_stream_rpc_method_handler
        elif method.client_streaming:
            make = grpc.stream_unary_rpc_method_handler
        else:
            make = grpc.unary_unary_rpc_method_handler
        handlers[method.name] = make(getattr(servicer, method.name), request_deserializer=safe_parser(request_type),
                                     response_serializer=response_type.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


async def _internal(context: Any, error: Exception) -> None:
    """A bug must not leak a stack trace to the client: log it here, answer INTERNAL with its type only."""
    log.exception("servicer failed")
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error ({type(error).__name__}); see the server log")


def _guarded_stream(inner: Any, claims: Claims) -> Any:
    """A streaming-response handler run with ``CURRENT_CLAIMS`` set; bugs become INTERNAL, never a trace."""

    async def guarded(request_or_iterator: Any, context: Any) -> Any:
        CURRENT_CLAIMS.set(claims)
        try:
            async for reply in inner(request_or_iterator, context):
                yield reply
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as error:
            await _internal(context, error)

    return guarded


def _with_claims(handler: grpc.RpcMethodHandler, claims: Claims) -> grpc.RpcMethodHandler:
    """The same handler, run with ``CURRENT_CLAIMS`` set (inside the handler's own task)."""
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(_guarded_stream(handler.stream_stream, claims),
                                                     handler.request_deserializer, handler.response_serializer)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(_guarded_stream(handler.unary_stream, claims),
                                                    handler.request_deserializer, handler.response_serializer)
    if handler.request_streaming:
        inner_su = handler.stream_unary

        async def stream_unary(request_iterator: Any, context: Any) -> Any:
            CURRENT_CLAIMS.set(claims)
            return await inner_su(request_iterator, context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, handler.request_deserializer, handler.response_serializer)
    inner_uu = handler.unary_unary

    async def unary_unary(request: Any, context: Any) -> Any:
        CURRENT_CLAIMS.set(claims)
        try:
            return await inner_uu(request, context)
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as error:
            await _internal(context, error)

    return grpc.unary_unary_rpc_method_handler(unary_unary, handler.request_deserializer, handler.response_serializer)


def _refusal(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape that only refuses (the request body is never parsed)."""

    async def refuse(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


_ANONYMOUS = Claims(role="operator", sub="anonymous", write=True)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Verifies the bearer token of every evtwin RPC; with no secret, every caller is ``anonymous``."""

    def __init__(self, secret: KeySet | KeySetFile | bytes | None, clock_s: Callable[[], float] = time.time,
                 anonymous: Claims = _ANONYMOUS) -> None:
        self.secret = secret
        self.clock_s = clock_s
        self.anonymous = anonymous

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
                                details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(PUBLIC_PREFIXES):
            return handler
        if self.secret is None:
            return _with_claims(handler, self.anonymous)
        try:
            keys = self.secret.current() if isinstance(self.secret, KeySetFile) else self.secret
            claims = verify_token(keys, bearer_token(details.invocation_metadata), self.clock_s())
        except AuthError as error:
            return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED, str(error))
        return _with_claims(handler, claims)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses; any other name or address may be reached from outside."""
    if host.strip("[]").lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def startup_refusals(cfg: ServingConfig, host: str | None = None) -> list[str]:
    """What makes this configuration unsafe to serve, one sentence each (``evtwin serve`` refuses unless
    ``--insecure``): auth off, a key-set file others may read, plaintext on a non-loopback address."""
    reasons = []
    host = host or cfg.host
    if not cfg.require_auth:
        reasons.append("auth is off (serving.require_auth=false): every caller would be an operator allowed to "
                       "write any vehicle")
    else:
        path = Path(cfg.auth_secret_path)
        if path.exists() and path.stat().st_mode & 0o077:
            reasons.append(f"the signing key file {path} is readable or writable by group/others "
                           f"(mode {path.stat().st_mode & 0o777:o}); anyone who reads it can mint tokens: "
                           f"chmod 600 {path}")
    if not (cfg.tls_cert_path and cfg.tls_key_path) and not is_loopback(host):
        reasons.append(f"plaintext gRPC on {host}, which is not a loopback address: tokens and telemetry would "
                       "cross the network readable; set serving.tls_cert_path and serving.tls_key_path, or "
                       "serving.host=127.0.0.1")
    return reasons


def server_credentials(cfg: ServingConfig) -> grpc.ServerCredentials | None:
    """TLS when a certificate and key are configured; mutual TLS when a client CA is too."""
    if not cfg.tls_cert_path and not cfg.tls_key_path:
        if cfg.tls_client_ca_path:
            raise ValueError("serving.tls_client_ca_path needs serving.tls_cert_path and serving.tls_key_path")
        return None
    if not (cfg.tls_cert_path and cfg.tls_key_path):
        raise ValueError("TLS needs both serving.tls_cert_path and serving.tls_key_path")
    key = Path(cfg.tls_key_path).read_bytes()
    cert = Path(cfg.tls_cert_path).read_bytes()
    client_ca = Path(cfg.tls_client_ca_path).read_bytes() if cfg.tls_client_ca_path else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None)


def channel_options(cfg: ServingConfig) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", cfg.max_message_bytes),
        ("grpc.max_send_message_length", cfg.max_message_bytes),
        # gRPC sets SO_REUSEPORT by default: a second server on a taken port binds too, the kernel splits
        # the connections between them and their clients see each other's frames as duplicates.
        ("grpc.so_reuseport", 0),
        # HTTP/2 streams per connection: a gateway multiplexes many vehicle streams on one connection.
        ("grpc.max_concurrent_streams", cfg.max_concurrent_streams),
        # Idle vehicle streams stay open for hours: the server probes dead peers every minute, and accepts
        # client pings (keepalive, BDP probes) every 10 s even when no data flows; the default policy
        # answers the third "early" ping with GOAWAY, which kills every stream of a quiet gateway.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 0),
        # Calls that arrived but that the event loop has not started yet. Above gRPC core's default backlog
        # (1,000 soft, 3,000 hard, random early drop between) a burst of new streams (a fleet reconnecting)
        # has calls cancelled before our code sees them; a client that already wrote its first batch
        # sees "INTERNAL: Internal error from Core" instead of the CANCELLED the server sent.
        ("grpc.server.max_pending_requests", cfg.max_pending_rpcs),
        ("grpc.server.max_pending_requests_hard_limit", cfg.max_pending_rpcs),
    ]


@dataclass
class FrontDoor:
    server: grpc.aio.Server
    port: int
    backend: FleetBackend
    health: Any
    hub: AlertHub
    sessions: SessionRegistry
    drain_timeout_s: float
    metrics: FrontDoorMetrics | None = None

    async def stop(self) -> None:
        """Stop accepting, let open streams ack what they hold, checkpoint the twins, stop.

        Bounded: streams get ``drain_timeout_s`` to finish, then ingest still in flight is abandoned (its
        frames are not acknowledged, so their clients re-send them elsewhere) and the final checkpoint and
        close get ``drain_timeout_s`` together. Skipping the final checkpoint loses nothing acknowledged:
        every ack is durable when it is sent."""
        await self.health.enter_graceful_shutdown()
        self.sessions.drain()
        self.hub.close()
        await self.server.stop(grace=self.drain_timeout_s)
        stop_ingest = getattr(self.backend, "stop_ingest", None)
        if stop_ingest is not None:
            stop_ingest(self.drain_timeout_s)  # no retries and no waiting on host actors that are still starting
        deadline = time.monotonic() + self.drain_timeout_s
        try:
            await asyncio.wait_for(self.backend.checkpoint(), timeout=self.drain_timeout_s)
        except TimeoutError:
            log.warning("twins not checkpointed within serving.drain_timeout_s=%.1f s; acknowledged frames are "
                        "durable already", self.drain_timeout_s)
        except Exception as error:  # shutting down: an unhealthy store must not keep the process alive
            log.warning("final checkpoint failed: %r; acknowledged frames are durable already", error)
        try:
            await asyncio.wait_for(self.backend.close(), timeout=max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            log.warning("twin hosts not closed within serving.drain_timeout_s=%.1f s; leaving them to the "
                        "runtime's shutdown", self.drain_timeout_s)


async def start_front_door(backend: FleetBackend, cfg: ServingConfig, *, secret: KeySet | KeySetFile | bytes | None,
                           host: str | None = None, port: int | None = None,
                           clock_ms: Callable[[], int] = wall_clock_ms,
                           alert_states: AlertStateLog | None = None) -> FrontDoor:
    """Build and start the server; ``port=0`` binds a free port (returned in ``FrontDoor.port``).

    ``alert_states``: the alert lifecycle log (durable beside the checkpoints); None keeps it in memory.
    """
    if cfg.require_auth and secret is None:
        raise ValueError("serving.require_auth is true but no auth secret was given")
    server = grpc.aio.server(
        interceptors=[AuthInterceptor(secret if cfg.require_auth else None)],
        options=channel_options(cfg),
        # A backstop over every RPC kind (queries, alert watchers, health checks); telemetry streams meet
        # their own limit first, refused with a message naming serving.max_concurrent_streams.
        maximum_concurrent_rpcs=2 * cfg.max_concurrent_streams,
    )
    hub = AlertHub(cfg.watch_queue_alerts)
    sessions = SessionRegistry()
    metrics = FrontDoorMetrics()
    getattr(backend, "attach_metrics", lambda _registry: None)(metrics.registry)  # twins in this process
    if cfg.metrics_port:
        start_metrics_server(metrics, cfg.metrics_port, host or cfg.host)
    limits = BatchLimits(max_batch_frames=cfg.max_batch_frames, max_future_skew_ms=int(cfg.max_future_skew_s * 1000))
    register_servicer(server, telemetry_pb2.DESCRIPTOR.services_by_name["TelemetryService"],
                      TelemetryServicer(backend, hub, sessions, limits, cfg.max_frames_in_flight_per_stream, clock_ms,
                                        metrics, max_streams=cfg.max_concurrent_streams))
    register_servicer(server, twin_pb2.DESCRIPTOR.services_by_name["TwinService"], TwinServicer(backend))
    register_servicer(server, alerts_pb2.DESCRIPTOR.services_by_name["AlertService"],
                      AlertServicer(backend, hub, alert_states, clock_ms))
    register_servicer(server, explain_pb2.DESCRIPTOR.services_by_name["ExplainService"], ExplainServicer(backend))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(SERVICE_NAMES + (health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = f"{host or cfg.host}:{cfg.grpc_port if port is None else port}"
    credentials = server_credentials(cfg)
    requested = cfg.grpc_port if port is None else port
    try:
        bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError as error:  # grpcio >= 1.60 raises where older versions returned 0
        raise OSError(f"could not bind the gRPC server to {address} (is another server listening there?): "
                      f"{error}") from None
    if bound == 0 or (requested and bound != requested):
        raise OSError(f"could not bind the gRPC server to {address} (bound port {bound}); is another server "
                      "listening there?")
    await server.start()
    for name in SERVICE_NAMES + ("",):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return FrontDoor(server, bound, backend, health_servicer, hub, sessions, cfg.drain_timeout_s, metrics)


async def serve_until_signal(door: FrontDoor, on_ready: Callable[[FrontDoor], None] | None = None) -> int:
    """Run until SIGTERM or SIGINT, then stop gracefully; returns the exit code (0)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if on_ready is not None:
        on_ready(door)
    serving = asyncio.create_task(door.server.wait_for_termination())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    log.info("stopping: draining streams, checkpointing twins")
    await door.stop()
    stopping.cancel()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    return 0
