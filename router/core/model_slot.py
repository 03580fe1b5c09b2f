"""Swapping the predictor of a running service for a newly promoted model version.

A :class:`ModelSlot` watches a :class:`ModelSource` (the model registry) and, when another
version is promoted, loads it off the event loop, checks that it can serve (it loads, it
predicts every arm of the catalog, a test prediction gives sane numbers) and then installs it
with one attribute assignment on the ``RouterCore``. A request reads the predictor once, when
it decides; requests decided before the swap finish on the old model's decision, and every
decision carries the version that made it. A model that fails the checks is refused: the
served one stays, the reason is logged and ``ttc_model_swaps_total{result="refused"}`` counts it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from router.core.protocols import Predictor
from router.core.service import RouterCore
from router.errors import ConfigError, InvalidRequest, ModelError, NotFound, RouterError

log = logging.getLogger("ttc_router.models")

PROBE_PROMPT = "What is 12 + 30? Answer with the number."
"""The prompt of the test prediction every candidate model must pass before it serves."""


class ModelSource(Protocol):
    """Where promoted model versions come from (``classifier.registry.Registry``).

    The calls block (file reads, ONNX loading); the slot runs them in a worker thread.
    """

    def current_version(self) -> str | None: ...

    def load(self, version: str) -> Predictor: ...

    def promote(self, version: str, reason: str = "") -> str | None: ...


@dataclass(frozen=True)
class SwapResult:
    """The version served after a reload, and the one served before it."""

    model_version: str
    previous_version: str


class ModelSlot:
    """The served predictor of ``core``, swapped to the source's promoted version."""

    def __init__(
        self,
        core: RouterCore,
        source: ModelSource,
        on_result: Callable[[str], None] | None = None,
    ) -> None:
        """``on_result`` is told ``"swapped"`` or ``"refused"`` after every attempt (the
        server counts them in ``ttc_model_swaps_total``)."""
        self._core = core
        self._source = source
        self._on_result = on_result
        self._lock = asyncio.Lock()
        self._seen: str | None = core.predictor.version
        self.swaps = 0
        self.refusals = 0
        self.last_refusal: str | None = None

    @property
    def version(self) -> str:
        """The version deciding requests now."""
        return self._core.predictor.version

    async def check(self, version: str) -> Predictor:
        """Load ``version`` and prove it can serve this service's arms; ``ModelError`` if not.

        ``NotFound`` passes through when the source has no such version.
        """
        try:
            predictor = await asyncio.to_thread(self._source.load, version)
        except NotFound:
            raise
        except RouterError as exc:
            raise ModelError(exc.message) from None
        except Exception as exc:
            raise ModelError(f"model {version} cannot be loaded: {exc!r}") from exc
        if predictor.version != version:
            raise ModelError(f"model {version} reports version {predictor.version!r}")
        arms = self._core.catalog.names
        known = set(predictor.arms)
        missing = [a for a in arms if a not in known]
        if missing:
            raise ModelError(
                f"model {version} does not predict the configured arm(s) "
                f"{', '.join(missing)} (it knows {', '.join(sorted(known))})"
            )
        embedding = await self._core.embedder.embed(PROBE_PROMPT)
        try:
            prediction = await asyncio.to_thread(predictor.predict, embedding, PROBE_PROMPT)
        except RouterError as exc:
            raise ModelError(f"model {version} failed a test prediction: {exc.message}") from None
        except Exception as exc:
            raise ModelError(f"model {version} failed a test prediction: {exc!r}") from exc
        for arm in arms:
            p = prediction.arms.get(arm)
            if p is None:
                raise ModelError(f"model {version}'s test prediction has no arm {arm}")
            numbers = (p.p_success, p.output_tokens, p.output_tokens_hi)
            if not all(math.isfinite(x) for x in numbers) or not 0.0 <= p.p_success <= 1.0:
                raise ModelError(
                    f"model {version}'s test prediction for {arm} is not usable: "
                    f"p_success={p.p_success}, tokens={p.output_tokens}"
                )
        return predictor

    async def poll(self) -> bool:
        """Read the promoted version once and swap to it if it is new; True when swapped."""
        async with self._lock:
            try:
                current = await asyncio.to_thread(self._source.current_version)
            except RouterError as exc:
                log.warning("cannot read the promoted model version: %s", exc.message)
                return False
            if current is None or current == self._seen:
                return False
            self._seen = current
            if current == self.version:
                return False
            try:
                predictor = await self.check(current)
            except RouterError as exc:
                self._refused(current, exc.message)
                return False
            self._install(predictor)
            return True

    async def reload(self, version: str | None = None, *, reason: str = "") -> SwapResult:
        """Serve ``version`` now (checked, then promoted in the source, then swapped in), or
        with no version re-read the promoted one and swap to it.

        A model that fails its checks is refused and raises ``InvalidRequest`` (a named
        version) or ``ConfigError`` (the promoted one); the served model stays.
        """
        async with self._lock:
            previous = self.version
            if version is None:
                current = await asyncio.to_thread(self._source.current_version)
                if current is None:
                    raise ConfigError("the model registry has no promoted version")
                self._seen = current
                if current == previous:
                    return SwapResult(previous, previous)
                try:
                    predictor = await self.check(current)
                except RouterError as exc:
                    self._refused(current, exc.message)
                    raise ConfigError(
                        f"the promoted model {current} was refused: {exc.message}; "
                        f"still serving {previous}"
                    ) from None
            else:
                if version == previous:
                    await asyncio.to_thread(self._source.promote, version, reason)
                    self._seen = version
                    return SwapResult(previous, previous)
                try:
                    predictor = await self.check(version)
                except ModelError as exc:
                    self._refused(version, exc.message)
                    raise InvalidRequest(
                        f"model {version} cannot be served: {exc.message}; still serving {previous}"
                    ) from None
                await asyncio.to_thread(self._source.promote, version, reason)
                self._seen = version
            self._install(predictor)
            return SwapResult(predictor.version, previous)

    async def watch(self, interval_s: float) -> None:
        """Poll the promoted version every ``interval_s`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.poll()
            except Exception:  # the watch outlives any one failed poll
                log.exception("checking the model registry failed")

    def _install(self, predictor: Predictor) -> None:
        previous = self._core.predictor.version
        self._core.predictor = predictor  # the swap: the next decision uses the new model
        # Drift windows measure the model that serves; the new one starts from empty windows.
        self._core.drift.reset()
        self.swaps += 1
        if self._on_result is not None:
            self._on_result("swapped")
        log.info("now serving model %s (was %s)", predictor.version, previous)

    def _refused(self, version: str, why: str) -> None:
        self.refusals += 1
        self.last_refusal = why
        if self._on_result is not None:
            self._on_result("refused")
        log.error("refused model %s, still serving %s: %s", version, self.version, why)


__all__ = ["PROBE_PROMPT", "ModelSlot", "ModelSource", "SwapResult"]
