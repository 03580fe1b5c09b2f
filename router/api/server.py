"""The grpc.aio server: Router service, standard health (per component), reflection, drain."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from router.api.gen.ttc_router.v1 import router_pb2
from router.api.servicer import SERVICE_NAME, RouterServicer, generic_handler
from router.errors import ConfigError

log = logging.getLogger("ttc_router.server")

HealthProbe = Callable[[], Awaitable[Mapping[str, bool]]]
MODEL_VERSION_KEY = "ttc-model-version"
# The components without which nothing can be served.
ESSENTIAL = ("config", "predictor", "redis")


def overall_serving(components: Mapping[str, bool]) -> bool:
    """Serving when the essentials are up and at least one backend tier is ready."""
    essentials = all(components.get(c, False) for c in ESSENTIAL)
    backends = [ok for name, ok in components.items() if name.startswith("backend:")]
    return essentials and any(backends)


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: Any  # grpc_health.v1.health.aio.HealthServicer
    probe: HealthProbe
    interval_s: float = 5.0
    _task: asyncio.Task[None] | None = field(default=None, repr=False)
    last: dict[str, bool] = field(default_factory=dict)

    async def refresh_health(self) -> dict[str, bool]:
        try:
            comps = dict(await self.probe())
        except Exception:  # a probe failure is a health finding, not a crash
            log.exception("health probe failed")
            comps = {c: False for c in ESSENTIAL}
        up = health_pb2.HealthCheckResponse.SERVING
        down = health_pb2.HealthCheckResponse.NOT_SERVING
        for name, ok in comps.items():
            await self.health.set(name, up if ok else down)
        overall = up if overall_serving(comps) else down
        await self.health.set("", overall)
        await self.health.set(SERVICE_NAME, overall)
        if comps != self.last:
            log.info("health %s", comps)
        self.last = comps
        return comps

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.refresh_health()

    async def start_health_watch(self) -> None:
        await self.refresh_health()
        self._task = asyncio.create_task(self._watch())

    async def shutdown(self, grace_s: float) -> None:
        """NOT_SERVING first (load balancers stop sending), then drain in-flight calls."""
        if self._task is not None:
            self._task.cancel()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)


def _versioned_health(model_version: Callable[[], str]) -> Any:
    """The standard health servicer, whose Check also sends the version of the predictor
    deciding requests at that moment (``model_version`` is read per call, so it follows a
    hot swap)."""

    class VersionedHealth(health.aio.HealthServicer):  # type: ignore[name-defined,misc]
        async def Check(self, request: Any, context: Any) -> Any:
            await context.send_initial_metadata(((MODEL_VERSION_KEY, model_version()),))
            return await super().Check(request, context)

    return VersionedHealth()


async def start_server(
    servicer: RouterServicer,
    listen: str,
    probe: HealthProbe,
    *,
    model_version: Callable[[], str],
    health_interval_s: float = 5.0,
) -> RunningServer:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 8 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers((generic_handler(servicer),))
    health_servicer = _versioned_health(model_version)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (
        router_pb2.DESCRIPTOR.services_by_name["Router"].full_name,
        health.SERVICE_NAME,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(names, server)
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError:  # grpc's way of saying the bind failed
        port = 0
    if port == 0:
        raise ConfigError(
            f"cannot listen on {listen}: the address is in use or not valid; "
            "set TTC_LISTEN to a free host:port"
        )
    await server.start()
    running = RunningServer(server, port, health_servicer, probe, health_interval_s)
    await running.start_health_watch()
    return running
