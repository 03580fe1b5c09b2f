"""``ttc-router outcomes sink|export``: drain the outcome stream to Parquet, export records.

``sink`` joins the stream's consumer group and writes Parquet parts under ``--dir`` until
SIGTERM or SIGINT, then writes and acknowledges its current batch and exits. Started again
with the same ``--consumer`` name it first finishes what it had read but not acknowledged;
entries of a consumer that stopped for good are claimed after ``--claim-idle-s``.
``export`` writes every decision once, with its latest score, as JSON Lines.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from router.outcomes.parquet_sink import DrainTotals

outcomes_app = typer.Typer(
    help="Outcome log: drain the Redis Stream into Parquet, export records for training.",
    no_args_is_help=True,
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

OutcomesDir = Annotated[
    Path,
    typer.Option("--dir", envvar="TTC_OUTCOMES_DIR", help="outcomes directory"),
]


def _parse_day(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        err_console.print(f"--since must be a date YYYY-MM-DD, got {value!r}", highlight=False)
        raise typer.Exit(2) from None


@outcomes_app.command("sink")
def sink(
    directory: OutcomesDir = Path("var/outcomes"),
    redis_url: Annotated[
        str | None, typer.Option("--redis-url", envvar="REDIS_URL", help="the stream's Redis")
    ] = None,
    stream: Annotated[
        str, typer.Option("--stream", envvar="TTC_OUTCOME_STREAM", help="the stream's key")
    ] = "ttc:outcomes",
    group: Annotated[str, typer.Option("--group", help="consumer group")] = "ttc-sink",
    consumer: Annotated[
        str | None,
        typer.Option("--consumer", help="this sink's name in the group (default: host name)"),
    ] = None,
    batch: Annotated[
        int, typer.Option("--batch", min=1, help="most entries written per batch")
    ] = 500,
    flush_s: Annotated[
        float, typer.Option("--flush-s", min=0.001, help="longest wait before a batch is written")
    ] = 1.0,
    claim_idle_s: Annotated[
        float,
        typer.Option(
            "--claim-idle-s", min=0.001, help="claim other consumers' entries idle this long"
        ),
    ] = 60.0,
) -> None:
    """Drain the outcome stream into day-partitioned Parquet files until SIGTERM/SIGINT."""
    from router.logs import configure_logging

    if not redis_url:
        err_console.print(
            "set REDIS_URL (or --redis-url) to the Redis the servers log outcomes to",
            highlight=False,
        )
        raise typer.Exit(2)
    configure_logging(os.environ.get("TTC_LOG_LEVEL", "INFO"))
    name = consumer or socket.gethostname()
    totals = asyncio.run(
        _run_sink(redis_url, directory, stream, group, name, batch, flush_s, claim_idle_s)
    )
    console.print(
        f"stopped: {totals.written} record(s) written in {totals.parts} part(s), "
        f"{totals.duplicates} duplicate(s) skipped, {totals.rejected} rejected",
        highlight=False,
    )


async def _run_sink(
    redis_url: str,
    directory: Path,
    stream: str,
    group: str,
    consumer: str,
    batch: int,
    flush_s: float,
    claim_idle_s: float,
) -> DrainTotals:
    from router.errors import ConfigError
    from router.ledger.connect import connect
    from router.outcomes.parquet_sink import ParquetDrain

    try:
        client, address = connect(redis_url, socket_connect_timeout=2.0, socket_timeout=6.0)
    except ConfigError as exc:
        err_console.print(exc.message, highlight=False)
        raise typer.Exit(2) from None
    drain = ParquetDrain(
        client,
        directory,
        stream=stream,
        group=group,
        consumer=consumer,
        batch=batch,
        flush_s=flush_s,
        claim_idle_s=claim_idle_s,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    console.print(
        f"draining {stream} on {address} into {directory}/ as {group}/{consumer}",
        highlight=False,
    )
    try:
        return await drain.run(stop)
    finally:
        await client.aclose()


@outcomes_app.command("export")
def export(
    directory: OutcomesDir = Path("var/outcomes"),
    out: Annotated[Path, typer.Option("--out", help="JSON Lines file to write")] = Path(
        "outcomes.jsonl"
    ),
    since: Annotated[
        str | None, typer.Option("--since", help="only decisions from this UTC day (YYYY-MM-DD)")
    ] = None,
    scored_only: Annotated[
        bool, typer.Option("--scored-only", help="only decisions that have a score")
    ] = False,
) -> None:
    """Write every logged decision once, with its latest score, as outcome records."""
    from router.outcomes.logs import read_logs
    from router.outcomes.redis_stream import dumps

    records = read_logs(directory, since=_parse_day(since), scored_only=scored_only)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(dumps(rec) + "\n")
    os.replace(tmp, out)
    scored = sum(1 for r in records if r.get("score") is not None)
    console.print(f"wrote {len(records)} record(s) ({scored} scored) to {out}", highlight=False)
