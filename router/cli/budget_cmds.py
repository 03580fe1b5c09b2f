"""``ttc-router budget show|reconcile``: a tenant's budget read from Redis, and an audit check.

``show`` reads the ledger's Redis directly (``REDIS_URL``) for every tenant in
``TTC_TENANTS_FILE``, or asks the service over gRPC (``--grpc``) for the calling tenant's own
view. ``reconcile`` sums each tenant's audit stream over the current windows and compares
the sums with the spent counters; it exits 1 when they disagree.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

budget_app = typer.Typer(
    help="Budgets: show caps, spend, holds, λ and resets; reconcile the audit trail.",
    no_args_is_help=True,
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True)

RedisUrl = Annotated[
    str | None, typer.Option("--redis-url", envvar="REDIS_URL", help="the ledger's Redis")
]
TenantsFile = Annotated[
    Path | None,
    typer.Option("--tenants-file", envvar="TTC_TENANTS_FILE", help="tenants.yaml"),
]
Prefix = Annotated[str, typer.Option("--key-prefix", help="the ledger's key prefix")]


def _usd(micros: int) -> str:
    return f"${micros / 1_000_000:.6f}"


def _windows_table(title: str, rows: list[tuple[str, int, int, int, int, str]]) -> Table:
    """window, cap, spent, held, remaining (micro-dollars) and reset time, one row a window."""
    table = Table(title=title)
    for col in ("window", "cap", "spent", "held", "remaining", "resets at"):
        table.add_column(col, overflow="fold")
    for window, cap, spent, held, remaining, reset_at in rows:
        table.add_row(window, _usd(cap), _usd(spent), _usd(held), _usd(remaining), reset_at)
    return table


def _load(tenants_file: Path | None, only: str | None) -> dict[str, Any]:
    from router.config.loader import load_tenants
    from router.config.settings import DEFAULTS_DIR
    from router.errors import ConfigError

    path = tenants_file or DEFAULTS_DIR / "tenants.demo.yaml"
    try:
        tenants = dict(load_tenants(path).tenants)
    except ConfigError as exc:
        err_console.print(exc.message, highlight=False)
        raise typer.Exit(2) from None
    if only is not None:
        if only not in tenants:
            err_console.print(f"tenant {only!r} is not in {path}", highlight=False)
            raise typer.Exit(2)
        tenants = {only: tenants[only]}
    return tenants


def _need_url(url: str | None) -> str:
    if not url:
        err_console.print(
            "set REDIS_URL (or --redis-url) to the ledger's Redis; an embedded Redis lives only "
            "as long as its server: use `ttc-router budget show --grpc` for it",
            highlight=False,
        )
        raise typer.Exit(2)
    return url


async def _show(url: str, prefix: str, tenants: dict[str, Any]) -> None:
    from router.ledger.redis_ledger import RedisLedger

    async with RedisLedger.from_url(url, key_prefix=prefix) as ledger:
        for name, cfg in tenants.items():
            state = await ledger.state(name, cfg.caps_micros, tz=cfg.timezone)
            pacing = state.pacing_lambda_per_usd if cfg.pacing else 0.0
            rows = [
                (
                    w.window,
                    w.cap_micros,
                    w.spent_micros,
                    w.held_micros,
                    w.remaining_micros,
                    w.reset_at.isoformat(),
                )
                for w in state.windows
            ]
            console.print(_windows_table(f"budget of tenant {name} ({cfg.timezone})", rows))
            per_request = (
                _usd(cfg.max_request_micros) if cfg.max_request_micros is not None else "none"
            )
            console.print(
                f"λ {cfg.lambda_per_usd + pacing:g} per USD (configured {cfg.lambda_per_usd:g} "
                f"+ pacing {pacing:g}{'' if cfg.pacing else ', pacing off'}); "
                f"per-request cap {per_request}",
                highlight=False,
            )


def _show_grpc(address: str, api_key: str) -> None:
    import grpc

    from router.api.gen.ttc_router.v1 import router_pb2 as pb
    from router.cli import client

    with client.stub(address) as s:
        try:
            resp = s.GetBudget(pb.GetBudgetRequest(), metadata=[("x-api-key", api_key)], timeout=10)
        except grpc.RpcError as err:
            client.fail(err, console)
            return
    zone = f" ({resp.timezone})" if resp.timezone else ""
    rows = [
        (w.window, w.cap_micros, w.spent_micros, w.held_micros, w.remaining_micros, w.reset_at)
        for w in resp.windows
    ]
    table = _windows_table(f"budget of tenant {resp.tenant}{zone}", rows)
    console.print(table)
    if resp.timezone:  # servers that report λ also report their zone
        per_request = _usd(resp.max_request_micros) if resp.max_request_micros else "none"
        console.print(
            f"λ {resp.lambda_per_usd:g} per USD (pacing {resp.pacing_lambda_per_usd:g}); "
            f"per-request cap {per_request}",
            highlight=False,
        )


@budget_app.command("show")
def show(
    tenant: Annotated[str | None, typer.Argument(help="one tenant; default: all")] = None,
    redis_url: RedisUrl = None,
    tenants_file: TenantsFile = None,
    key_prefix: Prefix = "ttc",
    grpc: Annotated[
        bool, typer.Option("--grpc", help="ask the service for the calling tenant's view")
    ] = False,
    address: Annotated[
        str, typer.Option("--address", envvar="TTC_ADDRESS", help="host:port of the service")
    ] = "127.0.0.1:50051",
    api_key: Annotated[
        str, typer.Option("--api-key", envvar="TTC_API_KEY", help="tenant API key")
    ] = "demo-key",
) -> None:
    """Caps, spent, held, remaining, reset times and λ of each window."""
    if grpc:
        _show_grpc(address, api_key)
        return
    url = _need_url(redis_url)
    asyncio.run(_show(url, key_prefix, _load(tenants_file, tenant)))


@dataclass(frozen=True)
class WindowCheck:
    """One window of one tenant: the counter against the sum of its audit entries."""

    tenant: str
    window: str
    start: datetime
    counter: int
    audited: int
    entries: int
    complete: bool

    @property
    def ok(self) -> bool:
        return self.counter == self.audited or not self.complete


async def reconcile_tenants(
    url: str, prefix: str, tenants: dict[str, Any], audit_maxlen: int = 1_000_000
) -> list[WindowCheck]:
    """Sum each tenant's audit stream over its current windows and read the counters."""
    from router.ledger.keys import TenantKeys
    from router.ledger.redis_ledger import RedisLedger
    from router.ledger.windows import WINDOWS, utc_from_timestamp, window_span, zone

    checks: list[WindowCheck] = []
    async with RedisLedger.from_url(url, key_prefix=prefix) as ledger:
        client = ledger.client
        now = utc_from_timestamp(time.time())
        for name, cfg in tenants.items():
            keys = TenantKeys(prefix, name)
            spans = [window_span(w, now, zone(cfg.timezone)) for w in WINDOWS]
            earliest = min(sp.start_ms for sp in spans)
            sums = dict.fromkeys(WINDOWS, 0)
            counts = dict.fromkeys(WINDOWS, 0)
            total = 0
            first_ts: int | None = None
            cursor = "-"
            while True:
                batch = await client.xrange(keys.audit, min=cursor, count=10_000)
                if not batch:
                    break
                for entry_id, fields in batch:
                    total += 1
                    ts = int((fields or {})[b"ts"])
                    first_ts = ts if first_ts is None else first_ts
                    last = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                    cursor = "(" + last
                    if ts < earliest:
                        continue
                    micros = int((fields or {})[b"micros"])
                    for sp in spans:
                        if sp.start_ms <= ts < sp.end_ms:
                            sums[sp.window] += micros
                            counts[sp.window] += 1
            counters = await client.mget([keys.spent(sp) for sp in spans])
            trimmed = total >= audit_maxlen
            for sp, raw in zip(spans, counters, strict=True):
                complete = not trimmed or (first_ts is not None and first_ts < sp.start_ms)
                checks.append(
                    WindowCheck(
                        name,
                        sp.window,
                        sp.start,
                        int(raw or 0),
                        sums[sp.window],
                        counts[sp.window],
                        complete,
                    )
                )
    return checks


@budget_app.command("reconcile")
def reconcile(
    tenant: Annotated[str | None, typer.Argument(help="one tenant; default: all")] = None,
    redis_url: RedisUrl = None,
    tenants_file: TenantsFile = None,
    key_prefix: Prefix = "ttc",
) -> None:
    """Check each window's spent counter against the sum of the audit stream; exit 1 if off."""
    url = _need_url(redis_url)
    checks = asyncio.run(reconcile_tenants(url, key_prefix, _load(tenants_file, tenant)))
    table = Table(title="audit stream against spent counters (current windows)")
    for col in ("tenant", "window", "start", "counter", "audit sum", "entries", "status"):
        table.add_column(col, overflow="fold")
    for c in checks:
        status = "ok" if c.counter == c.audited else "MISMATCH"
        if not c.complete and c.counter != c.audited:
            status = "stream trimmed: cannot verify"
        table.add_row(
            c.tenant,
            c.window,
            c.start.isoformat(),
            _usd(c.counter),
            _usd(c.audited),
            str(c.entries),
            status,
        )
    console.print(table)
    bad = [c for c in checks if not c.ok]
    if bad:
        err_console.print(f"{len(bad)} window(s) disagree with the audit stream", highlight=False)
        raise typer.Exit(1)
    console.print(f"all {len(checks)} window(s) agree with the audit stream")


__all__ = ["WindowCheck", "budget_app", "reconcile_tenants"]
