"""The gRPC front of a built ``Runtime``: its servicer and a started server, in one call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from router.api.server import RunningServer, start_server
from router.api.servicer import ConcurrencyLimiter, RouterServicer

if TYPE_CHECKING:
    from router.api.metrics import ServiceMetrics
    from router.config.settings import Settings
    from router.runtime import Runtime


@dataclass
class Serving:
    servicer: RouterServicer
    server: RunningServer

    @property
    def port(self) -> int:
        return self.server.port


async def serve_runtime(
    runtime: Runtime,
    settings: Settings,
    *,
    metrics: ServiceMetrics | None = None,
) -> Serving:
    """Start the Router service for ``runtime`` on ``settings.listen``: concurrency limit,
    default deadline, admin key and model slot from ``settings``/``runtime``; health
    reports the model version in service."""
    servicer = RouterServicer(
        lambda: runtime.core,
        lambda: runtime.tenants,
        ConcurrencyLimiter(settings.max_concurrency),
        default_deadline_s=settings.default_deadline_s,
        metrics=metrics,
        models=runtime.models,
        admin_key_sha256=settings.admin_key_sha256,
    )
    server = await start_server(
        servicer,
        settings.listen,
        runtime.health,
        model_version=lambda: runtime.core.predictor.version,
    )
    return Serving(servicer, server)
