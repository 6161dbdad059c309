"""Operational endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from litestar import Controller, MediaType, Response, get
from litestar.di import NamedDependency
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Probe = Callable[[], Awaitable[dict[str, object]]]


@dataclass
class Operations:
    """What the operational endpoints need, injected by the bootstrap."""

    readiness_probes: dict[str, Probe]
    metrics_registry: CollectorRegistry
    refresh_metrics: Callable[[], Awaitable[None]]


class OperationsController(Controller):
    path = ""
    include_in_schema = True
    tags = ["operations"]

    @get("/healthz", operation_id="healthz", media_type=MediaType.JSON, sync_to_thread=False)
    def healthz(self) -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @get("/readyz", operation_id="readyz", media_type=MediaType.JSON)
    async def readyz(self, operations: NamedDependency[Operations]) -> Response[dict[str, object]]:
        """Postgres and Kafka reachable, and how far the relay lags behind the log."""
        checks: dict[str, object] = {}
        ready = True
        for name, probe in operations.readiness_probes.items():
            try:
                checks[name] = {"ok": True, **await probe()}
            except Exception as error:  # a failing dependency is reported, not raised
                ready = False
                checks[name] = {"ok": False, "error": type(error).__name__}
        return Response({"status": "ready" if ready else "not ready", "checks": checks},
                        status_code=200 if ready else 503)

    @get("/metrics", operation_id="metrics", media_type=CONTENT_TYPE_LATEST)
    async def metrics(self, operations: NamedDependency[Operations]) -> Response[bytes]:
        """Prometheus text exposition."""
        await operations.refresh_metrics()
        return Response(generate_latest(operations.metrics_registry),
                        media_type=CONTENT_TYPE_LATEST)
