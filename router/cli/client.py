"""Client commands over the gRPC API: ``route``, ``generate``, ``budget``."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
from rich.console import Console
from rich.markup import escape
from rich.table import Table

DEFAULT_ADDRESS = "127.0.0.1:50051"
DEMO_KEY = "demo-key"


def address_default() -> str:
    return os.environ.get("TTC_ADDRESS", DEFAULT_ADDRESS)


def api_key_default() -> str:
    return os.environ.get("TTC_API_KEY", DEMO_KEY)


def usd(micros: int) -> str:
    return f"${micros / 1_000_000:.6f}"


@contextmanager
def stub(address: str) -> Iterator[Any]:
    from router.api.gen.ttc_router.v1 import router_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        yield router_pb2_grpc.RouterStub(channel)  # type: ignore[no-untyped-call]


def fail(err: grpc.RpcError, console: Console) -> None:
    code = err.code() if hasattr(err, "code") else None
    details = err.details() if hasattr(err, "details") else str(err)
    name = code.name if code is not None else "ERROR"
    console.print(f"[red]error[/] {name}: {details}", highlight=False)
    raise SystemExit(1)


def hints(
    arms: list[str], max_cost: float | None, min_quality: float | None, max_latency_ms: float | None
) -> Any:
    from router.api.gen.ttc_router.v1 import router_pb2 as pb

    h = pb.Hints(arms=arms)
    if max_cost is not None:
        h.max_cost_usd = max_cost
    if min_quality is not None:
        h.min_quality = min_quality
    if max_latency_ms is not None:
        h.max_latency_ms = max_latency_ms
    return h


def print_decision(d: Any, console: Console) -> None:
    table = Table(title=f"decision {d.decision_id} (model {d.model_version})")
    for col in ("", "arm", "p_success", "expected", "reserved", "latency ms", "excluded"):
        table.add_column(col, no_wrap=col != "excluded")
    for c in d.candidates:
        table.add_row(
            "→" if c.arm == d.arm else "",
            c.arm,
            f"{c.p_success:.3f}",
            usd(c.expected_cost_micros),
            usd(c.reserved_cost_micros),
            f"{c.expected_latency_ms:.0f}",
            c.excluded_reason,
        )
    console.print(table)


def route(address: str, api_key: str, prompt: str, h: Any, reserve: bool, console: Console) -> None:
    from router.api.gen.ttc_router.v1 import router_pb2 as pb

    with stub(address) as s:
        try:
            resp = s.Route(
                pb.RouteRequest(prompt=prompt, hints=h, reserve=reserve),
                metadata=[("x-api-key", api_key)],
                timeout=30,
            )
        except grpc.RpcError as err:
            fail(err, console)
            return
    print_decision(resp.decision, console)
    console.print(
        f"chosen {resp.decision.arm} (max_tokens {resp.decision.max_tokens}); "
        f"reserved={resp.reserved}; budget left {usd(resp.budget_remaining_micros)}"
    )


def generate(
    address: str, api_key: str, prompt: str, h: Any, timeout: float, console: Console
) -> None:
    from router.api.gen.ttc_router.v1 import router_pb2 as pb

    with stub(address) as s:
        try:
            for msg in s.Generate(
                pb.GenerateRequest(prompt=prompt, hints=h),
                metadata=[("x-api-key", api_key)],
                timeout=timeout,
            ):
                if msg.HasField("delta"):
                    sys.stdout.write(msg.delta)
                    sys.stdout.flush()
                else:
                    f = msg.final
                    d = f.decision
                    sys.stdout.write("\n")
                    if d.fallback_from:
                        console.print(
                            f"[yellow]tier {d.fallback_from} was down; answered by {d.arm}[/]",
                            highlight=False,
                        )
                    console.print(
                        f"[dim]arm[/] {d.arm}  [dim]tier[/] {d.tier}  "
                        f"[dim]strategy[/] {d.strategy}  "
                        f"[dim]p_success[/] {d.p_success:.3f}\n"
                        f"[dim]tokens[/] {f.usage.input_tokens} in / {f.usage.output_tokens} out "
                        f"({f.usage.samples} sample(s)"
                        f"{', estimated' if f.usage_estimated else ''})  "
                        f"[dim]cost[/] {usd(f.cost_micros)} "
                        f"(reserved {usd(d.reserved_cost_micros)})  "
                        f"[dim]budget left[/] {usd(f.budget_remaining_micros)}\n"
                        f"[dim]latency[/] {f.latency_ms:.0f} ms  [dim]decision[/] {d.decision_id}",
                        highlight=False,
                    )
                    if f.detail:
                        details = "  ".join(f"{k}={v}" for k, v in sorted(f.detail.items()))
                        console.print(f"[dim]details[/] {escape(details)}", highlight=False)
        except grpc.RpcError as err:
            sys.stdout.write("\n")
            fail(err, console)
