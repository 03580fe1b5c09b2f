"""Hot swap of the predictor in a running service, driven by the model registry.

A real grpc.aio service (real Redis, real embedder, the demo backends) serves the registry's
promoted model and watches ``CURRENT``. Under a steady load of concurrent Generate calls a
second version is promoted: no call fails, decisions switch from the old version to the new
one exactly once, and the health check's ``ttc-model-version`` follows. A model that does
not cover the configured arms, and one whose files are damaged, are refused while the
served one keeps answering; rollback returns to earlier versions; the admin RPC
``ReloadModel`` needs the admin key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from classifier.predictor import default_model_dir
from classifier.registry import CURRENT_FILE, Registry, write_atomic
from router.api.gen.ttc_router.v1 import router_pb2 as pb
from router.api.gen.ttc_router.v1 import router_pb2_grpc
from router.api.server import MODEL_VERSION_KEY, start_server
from router.api.servicer import ConcurrencyLimiter, RouterServicer
from router.config.backends import BackendsConfig
from router.config.tenants import hash_api_key
from tests.integration.fixtures.custom_service import CustomService, custom_service
from tests.unit.test_registry import model_variant

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

ADMIN_KEY = "admin-secret"
NEW = "hot-swap-2"
OTHER_ARMS = "hot-swap-other-arms"
DAMAGED = "hot-swap-damaged"
PROMPTS = (
    "What is 17*23?",
    "Compute 45 + 38 and explain briefly.",
    "What is 12*12?",
    "Name the capital of France.",
)
WORKERS = 8


@dataclass(frozen=True)
class Versions:
    old: str
    new: str
    other_arms: str
    damaged: str


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, Versions]:
    """The shipped model (promoted), a copy under another version, a copy whose arms do not
    cover the service's, and a copy whose ONNX file is damaged after registration."""
    work = tmp_path_factory.mktemp("hot-swap-models")
    reg = Registry(work / "registry")
    old = reg.add(default_model_dir())
    new = reg.add(model_variant(work / "new", NEW), parent=old)
    other = reg.add(
        model_variant(work / "other", OTHER_ARMS, rename_arms={"premium/greedy": "premium/vote@3"})
    )
    damaged = reg.add(model_variant(work / "damaged", DAMAGED))
    onnx = reg.path(damaged) / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:4096])
    reg.promote(old, "initial")
    return reg, Versions(old, new, other, damaged)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def svc(
    tmp_path_factory: pytest.TempPathFactory,
    redis_url: str,
    demo_backends_config: BackendsConfig,
    registry: tuple[Registry, Versions],
) -> AsyncIterator[CustomService]:
    reg, _ = registry
    overrides = {
        "model_registry": reg.root,
        "model_watch_s": 0.05,
        "admin_key_sha256": hash_api_key(ADMIN_KEY),
    }
    async with custom_service(
        tmp_path_factory.mktemp("hot-swap") / "svc",
        redis_url,
        demo_backends_config,
        tenant="hot-swap",
        settings_overrides=overrides,
    ) as s:
        yield s


async def health_version(port: int) -> str:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = health_pb2_grpc.HealthStub(ch).Check(  # type: ignore[no-untyped-call]
            health_pb2.HealthCheckRequest(service="")
        )
        await call
        return str(dict(await call.initial_metadata())[MODEL_VERSION_KEY])


async def serving_version(svc: CustomService) -> str:
    """The version a fresh Generate is decided by."""
    _, final = await svc.generate(PROMPTS[0])
    return str(final.decision.model_version)


async def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def swaps(result: str) -> float:
    return REGISTRY.get_sample_value("ttc_model_swaps_total", {"result": result}) or 0.0


@dataclass(frozen=True)
class Call:
    started: float
    first_message: float
    version: str
    decision_id: str


async def test_serves_the_registry_s_promoted_model(
    svc: CustomService, registry: tuple[Registry, Versions]
) -> None:
    _, v = registry
    assert svc.runtime.models is not None
    assert await serving_version(svc) == v.old
    assert await health_version(svc.port) == v.old


async def test_swap_under_load_drops_no_request(
    svc: CustomService, registry: tuple[Registry, Versions]
) -> None:
    reg, v = registry
    calls: list[Call] = []
    failures: list[str] = []
    stop = asyncio.Event()
    swapped_before = swaps("swapped")

    async def worker(i: int) -> None:
        n = i
        while not stop.is_set():
            started = time.monotonic()
            first: float | None = None
            final = None
            try:
                async for msg in svc.stub.Generate(
                    pb.GenerateRequest(prompt=PROMPTS[n % len(PROMPTS)]),
                    metadata=svc.metadata,
                    timeout=30.0,
                ):
                    first = first or time.monotonic()
                    if msg.HasField("final"):
                        final = msg.final
            except grpc.aio.AioRpcError as exc:
                failures.append(f"{exc.code().name}: {exc.details()}")
                continue
            assert first is not None and final is not None
            calls.append(
                Call(started, first, final.decision.model_version, final.decision.decision_id)
            )
            n += 1

    workers = [asyncio.create_task(worker(i)) for i in range(WORKERS)]
    try:
        await wait_for(lambda: len(calls) >= 2 * WORKERS, "load before the promotion")
        t_promote, wall_promote = time.monotonic(), time.time()
        await asyncio.to_thread(reg.promote, v.new, "swap under load")
        await wait_for(lambda: svc.runtime.core.predictor.version == v.new, "the swap")
        t_swapped = time.monotonic()
        n_at_swap = len(calls)
        await wait_for(lambda: len(calls) >= n_at_swap + 2 * WORKERS, "load after the swap")
    finally:
        stop.set()
        await asyncio.gather(*workers)

    assert failures == []
    old = [c for c in calls if c.version == v.old]
    new = [c for c in calls if c.version == v.new]
    assert len(old) + len(new) == len(calls)
    assert old and new
    # Decided before the promotion: the old model; started after the swap: the new one.
    assert all(c.version == v.old for c in calls if c.first_message < t_promote)
    assert all(c.version == v.new for c in calls if c.started > t_swapped)
    # One switch: no call started after a new-model answer began was decided by the old model.
    first_new = min(c.first_message for c in new)
    assert all(c.started < first_new for c in old)
    assert swaps("swapped") == swapped_before + 1
    assert await health_version(svc.port) == v.new

    # The outcome log agrees: one record per call, each with the version that decided it.
    by_id = {r["decision_id"]: r for r in svc.records()}
    for c in calls:
        record = by_id[c.decision_id]
        assert record["model_version"] == c.version
        assert record["error"] is None
    # Records written before the promotion are the old model's; the new model's come after.
    for c in calls:
        ts = datetime.fromisoformat(by_id[c.decision_id]["ts"]).timestamp()
        if ts < wall_promote:
            assert c.version == v.old
        if c.version == v.new:
            assert ts >= wall_promote


async def test_a_model_that_misses_an_arm_is_refused(
    svc: CustomService, registry: tuple[Registry, Versions]
) -> None:
    reg, v = registry
    slot = svc.runtime.models
    assert slot is not None
    refusals, refused_metric = slot.refusals, swaps("refused")
    await asyncio.to_thread(reg.promote, v.other_arms, "wrong arms")
    await wait_for(lambda: slot.refusals > refusals, "the refusal")
    assert slot.last_refusal is not None and "premium/greedy" in slot.last_refusal
    assert swaps("refused") == refused_metric + 1
    assert svc.runtime.core.predictor.version == v.new
    assert await serving_version(svc) == v.new
    assert await health_version(svc.port) == v.new
    await asyncio.sleep(0.3)  # later polls do not try the same version again
    assert slot.refusals == refusals + 1


async def test_rollback_returns_to_earlier_versions(
    svc: CustomService, registry: tuple[Registry, Versions]
) -> None:
    reg, v = registry
    assert await asyncio.to_thread(reg.rollback, "arms missing") == v.new
    assert svc.runtime.core.predictor.version == v.new
    assert await asyncio.to_thread(reg.rollback, "back to the shipped model") == v.old
    await wait_for(lambda: svc.runtime.core.predictor.version == v.old, "the rollback swap")
    assert await serving_version(svc) == v.old
    assert await health_version(svc.port) == v.old


async def test_a_damaged_model_is_refused(
    svc: CustomService, registry: tuple[Registry, Versions]
) -> None:
    reg, v = registry
    slot = svc.runtime.models
    assert slot is not None
    refusals = slot.refusals
    # The registry refuses to promote it, so CURRENT is written by hand.
    write_atomic(reg.root / CURRENT_FILE, v.damaged + "\n")
    await wait_for(lambda: slot.refusals > refusals, "the refusal")
    assert slot.last_refusal is not None and "model.onnx" in slot.last_refusal
    assert await serving_version(svc) == v.old
    assert await health_version(svc.port) == v.old


async def test_reload_model_needs_the_admin_key(
    svc: CustomService, registry: tuple[Registry, Versions]
) -> None:
    reg, v = registry
    request = pb.ReloadModelRequest(version=v.new)
    for metadata in ([], [("x-admin-key", "wrong")], svc.metadata):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await svc.stub.ReloadModel(request, metadata=metadata)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "admin key" in (err.value.details() or "")
    assert svc.runtime.core.predictor.version == v.old
    assert reg.current_version() == v.damaged


async def test_reload_model_promotes_and_swaps(
    svc: CustomService, registry: tuple[Registry, Versions]
) -> None:
    reg, v = registry
    admin = [("x-admin-key", ADMIN_KEY)]
    r = await svc.stub.ReloadModel(
        pb.ReloadModelRequest(version=v.new, reason="admin call"), metadata=admin
    )
    assert (r.model_version, r.previous_version) == (v.new, v.old)
    assert svc.runtime.core.predictor.version == v.new
    assert reg.current_version() == v.new
    assert reg.history()[-1].reason == "admin call"
    assert await health_version(svc.port) == v.new

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.stub.ReloadModel(pb.ReloadModelRequest(version=v.other_arms), metadata=admin)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "premium/greedy" in (err.value.details() or "")
    assert reg.current_version() == v.new
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await svc.stub.ReloadModel(pb.ReloadModelRequest(version="not-there"), metadata=admin)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    # Without a version: re-read CURRENT (promoted elsewhere, e.g. by the CLI).
    write_atomic(reg.root / CURRENT_FILE, v.old + "\n")
    r = await svc.stub.ReloadModel(pb.ReloadModelRequest(), metadata=admin)
    # The watcher polls CURRENT too and may have swapped first.
    assert r.model_version == v.old
    assert r.previous_version in (v.new, v.old)
    r = await svc.stub.ReloadModel(pb.ReloadModelRequest(), metadata=admin)
    assert (r.model_version, r.previous_version) == (v.old, v.old)
    assert await serving_version(svc) == v.old


async def test_reload_model_when_turned_off(
    svc: CustomService, registry: tuple[Registry, Versions]
) -> None:
    """Servers without an admin key, or without a registry, answer with a clear refusal."""
    runtime = svc.runtime
    cases = [
        (None, runtime.models, grpc.StatusCode.PERMISSION_DENIED, "TTC_ADMIN_KEY_SHA256"),
        (hash_api_key(ADMIN_KEY), None, grpc.StatusCode.FAILED_PRECONDITION, "TTC_MODEL_REGISTRY"),
    ]
    for key_hash, models, code, hint in cases:
        servicer = RouterServicer(
            lambda: runtime.core,
            lambda: runtime.tenants,
            ConcurrencyLimiter(4),
            default_deadline_s=30.0,
            models=models,
            admin_key_sha256=key_hash,
        )
        server = await start_server(
            servicer,
            "127.0.0.1:0",
            runtime.health,
            model_version=lambda: runtime.core.predictor.version,
        )
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
                stub = router_pb2_grpc.RouterStub(ch)  # type: ignore[no-untyped-call]
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.ReloadModel(
                        pb.ReloadModelRequest(), metadata=[("x-admin-key", ADMIN_KEY)]
                    )
            assert err.value.code() == code
            assert hint in (err.value.details() or "")
        finally:
            await server.shutdown(0.5)
