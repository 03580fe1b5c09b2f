"""The arms the service offers: each arm's tier settings and strategy, checked once at start."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from router.config.backends import BackendsConfig, TierConfig
from router.core.types import Arm, Price
from router.errors import ConfigError, RouterError
from router.strategies import Strategy, parse_strategy


@dataclass(frozen=True)
class ArmSpec:
    arm: Arm
    tier: TierConfig
    strategy: Strategy

    @property
    def name(self) -> str:
        return self.arm.name


class Catalog:
    """Arms from backends.yaml, each with a parsed strategy and a predictor that knows it."""

    def __init__(
        self, specs: Iterable[ArmSpec], tiers: Mapping[str, TierConfig] | None = None
    ) -> None:
        self._specs = {s.name: s for s in specs}
        self.tiers: dict[str, TierConfig] = dict(tiers or {})
        for s in self._specs.values():
            self.tiers.setdefault(s.arm.tier, s.tier)

    def price_of(self, tier: str) -> Price:
        """The price of tier ``tier`` (USD per million tokens)."""
        return self.tiers[tier].price.to_price()

    @classmethod
    def build(cls, cfg: BackendsConfig, predictor_arms: Sequence[str]) -> Catalog:
        specs = []
        known = set(predictor_arms)
        for arm in cfg.arm_list():
            try:
                strategy = parse_strategy(arm.strategy, cfg.options_for(arm.name))
            except RouterError as exc:
                raise ConfigError(f"backends: arm {arm.name!r}: {exc.message}") from exc
            for used in strategy.tiers_used(arm.tier):
                if used not in cfg.tiers:
                    raise ConfigError(
                        f"backends: arm {arm.name!r} uses tier {used!r}, which is not under "
                        f"tiers ({', '.join(sorted(cfg.tiers))})"
                    )
            if arm.name not in known:
                raise ConfigError(
                    f"backends: arm {arm.name!r} is not predicted by the loaded model "
                    f"(it knows {', '.join(sorted(known))}); train a model that covers it "
                    "or remove the arm"
                )
            specs.append(ArmSpec(arm, cfg.tiers[arm.tier], strategy))
        return cls(specs, cfg.tiers)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[ArmSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def get(self, name: str) -> ArmSpec:
        return self._specs[name]

    @property
    def names(self) -> list[str]:
        return list(self._specs)
