"""The ledger's Lua scripts, each registered with a client as one EVALSHA-able script.

Every script is ``holds.lua`` (shared hold bookkeeping) followed by its own file. redis-py's
registered scripts call EVALSHA and, on NOSCRIPT (script cache flushed, server restarted),
load the source again and retry, so a lost script cache costs one extra round trip.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

import redis.asyncio as aredis
from redis.commands.core import AsyncScript


@cache
def script_source(name: str) -> str:
    """The full text sent to Redis for ``<name>.lua``: the shared prelude, then the script."""
    here = files("router.ledger")
    prelude = here.joinpath("holds.lua").read_text(encoding="utf-8")
    body = here.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    return f"{prelude}\n{body}"


@dataclass(frozen=True)
class LedgerScripts:
    reserve: AsyncScript
    settle: AsyncScript
    release: AsyncScript
    state: AsyncScript

    @classmethod
    def register(cls, client: aredis.Redis) -> LedgerScripts:
        def reg(name: str) -> AsyncScript:
            script: Any = client.register_script(script_source(name))
            return script  # type: ignore[no-any-return]

        return cls(reg("reserve"), reg("settle"), reg("release"), reg("state"))
