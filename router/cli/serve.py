"""``ttc-router serve``: run the gRPC service until SIGTERM/SIGINT; SIGHUP reloads tenants."""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from rich.console import Console

from router.config.settings import Settings
from router.errors import ConfigError

log = logging.getLogger("ttc_router.serve")


async def serve(settings: Settings, console: Console) -> None:
    from router.api.app import serve_runtime
    from router.api.metrics import ServiceMetrics
    from router.config.loader import load_tenants
    from router.config.tenants import TenantsConfig, watch_tenants_file
    from router.runtime import build_runtime

    t0 = time.monotonic()
    console.print("[bold]ttc-router[/] starting…")
    runtime = await build_runtime(settings)
    try:
        running = (await serve_runtime(runtime, settings, metrics=ServiceMetrics())).server
    except BaseException:
        await runtime.aclose()
        raise
    host = settings.listen.rsplit(":", 1)[0]
    core = runtime.core
    console.print(
        f"  backends : {'simulated demo backends' if runtime.demo else settings.backends_file}"
    )
    for tier, cfg in runtime.backends_config.tiers.items():
        console.print(
            f"             {tier:<10} {cfg.protocol:<9} {cfg.endpoint}  model={cfg.model}"
        )
    console.print(f"  arms     : {', '.join(core.catalog.names)}")
    console.print(
        f"  redis    : {runtime.redis_url}{' (embedded)' if settings.redis_url is None else ''}"
    )
    console.print(f"  predictor: {core.predictor.version}")
    console.print(
        f"  tenants  : {settings.tenants_file} ({len(runtime.tenants.tenants)} tenant(s))"
    )
    if settings.outcome_log == "redis":
        drain = f" → Parquet in {settings.outcomes_dir}/" if settings.outcome_drain else ""
        console.print(f"  outcomes : Redis Stream {settings.outcome_stream}{drain}")
    else:
        console.print(f"  outcomes : JSON Lines in {settings.outcomes_dir}/")
    console.print(f"  health   : {running.last}")
    if settings.metrics_listen:
        from prometheus_client import start_http_server

        m_host, m_port = settings.metrics_listen.rsplit(":", 1)
        try:
            start_http_server(int(m_port), m_host)
            console.print(f"  metrics  : http://{settings.metrics_listen}/metrics")
        except OSError as exc:
            log.warning("metrics endpoint not started on %s: %s", settings.metrics_listen, exc)
            console.print(f"  metrics  : [red]not started[/] ({settings.metrics_listen}: {exc})")
    console.print(
        f"[green]serving on {host}:{running.port}[/] (ready in {time.monotonic() - t0:.1f} s); "
        'try: ttc-router generate "What is 17*23?"'
    )

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def reload_tenants() -> None:
        try:
            runtime.tenants = load_tenants(settings.tenants_file)
            log.info("reloaded %s", settings.tenants_file)
            console.print(f"reloaded {settings.tenants_file}")
        except ConfigError as exc:
            log.error("kept the previous tenants: %s", exc.message)
            console.print(f"[red]kept the previous tenants[/]: {exc.message}")

    def apply_tenants(cfg: TenantsConfig) -> None:
        runtime.tenants = cfg
        console.print(f"reloaded {settings.tenants_file} after it changed")

    def keep_tenants(message: str) -> None:
        console.print(f"[red]kept the previous tenants[/]: {message}")

    watcher = asyncio.create_task(
        watch_tenants_file(settings.tenants_file, apply_tenants, on_error=keep_tenants)
    )
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_tenants)
    try:
        await stop.wait()
        console.print("shutting down: health NOT_SERVING, draining in-flight calls…")
        await running.shutdown(settings.shutdown_grace_s)
    finally:
        watcher.cancel()
        await runtime.aclose()
        console.print("stopped")
