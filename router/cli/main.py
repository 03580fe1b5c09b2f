"""``ttc-router``: serve, call, and check the configuration of the router."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from router.cli import classifier_cmds, models_cmds
from router.cli.budget_cmds import budget_app
from router.cli.outcomes_cmds import outcomes_app

app = typer.Typer(
    help="ttc-router: per-request compute allocation for LLM traffic.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Validate policy files and make key hashes.", no_args_is_help=True)
app.add_typer(config_app, name="config")
classifier_cmds.register(app)
app.add_typer(budget_app, name="budget")
app.add_typer(outcomes_app, name="outcomes")
models_cmds.register(app)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

Address = Annotated[
    str, typer.Option("--address", envvar="TTC_ADDRESS", help="host:port of the service")
]
ApiKey = Annotated[str, typer.Option("--api-key", envvar="TTC_API_KEY", help="tenant API key")]
Arms = Annotated[list[str], typer.Option("--arm", help="only consider this arm (repeatable)")]
MaxCost = Annotated[float | None, typer.Option("--max-cost", help="max reserved cost, USD")]
MinQuality = Annotated[float | None, typer.Option("--min-quality", help="min predicted p_success")]
MaxLatency = Annotated[float | None, typer.Option("--max-latency-ms", help="max est. latency")]


@app.command()
def serve(
    listen: Annotated[str | None, typer.Option(help="gRPC listen address (TTC_LISTEN)")] = None,
) -> None:
    """Run the gRPC service (embedded Redis and demo backends unless configured)."""
    from router.cli.serve import serve as run
    from router.config.settings import Settings
    from router.errors import RouterError
    from router.logs import configure_logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = Settings() if listen is None else Settings(listen=listen)
    configure_logging(settings.log_level)
    try:
        asyncio.run(run(settings, console))
    except RouterError as exc:
        err_console.print(f"[red]cannot start[/]: {exc.message}", highlight=False)
        raise typer.Exit(2) from None


@app.command()
def route(
    prompt: str,
    address: Address = "127.0.0.1:50051",
    api_key: ApiKey = "demo-key",
    arm: Arms = [],  # noqa: B006 - typer reads the default, never mutates it
    max_cost: MaxCost = None,
    min_quality: MinQuality = None,
    max_latency_ms: MaxLatency = None,
    reserve: Annotated[bool, typer.Option(help="also place a budget hold")] = False,
) -> None:
    """Ask for a decision only: which arm, at what predicted quality and cost."""
    from router.cli import client

    client.route(
        address,
        api_key,
        prompt,
        client.hints(arm, max_cost, min_quality, max_latency_ms),
        reserve,
        console,
    )


@app.command()
def generate(
    prompt: str,
    address: Address = "127.0.0.1:50051",
    api_key: ApiKey = "demo-key",
    arm: Arms = [],  # noqa: B006
    max_cost: MaxCost = None,
    min_quality: MinQuality = None,
    max_latency_ms: MaxLatency = None,
    timeout: Annotated[float, typer.Option(help="deadline in seconds")] = 120.0,
) -> None:
    """Route and answer a prompt, streaming the answer, then its arm, usage and cost."""
    from router.cli import client

    client.generate(
        address,
        api_key,
        prompt,
        client.hints(arm, max_cost, min_quality, max_latency_ms),
        timeout,
        console,
    )


@config_app.command("check")
def config_check(files: list[Path]) -> None:
    """Validate backends.yaml / tenants.yaml files without starting anything."""
    from router.config.loader import check_file
    from router.errors import ConfigError

    failed = False
    for f in files:
        try:
            console.print(check_file(f), highlight=False, soft_wrap=True)
        except ConfigError as exc:
            failed = True
            err_console.print(exc.message, highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


@config_app.command("hash-key")
def hash_key(key: str) -> None:
    """Print the SHA-256 form of an API key, for tenants.yaml."""
    from router.config.tenants import hash_api_key

    console.print(hash_api_key(key))


if __name__ == "__main__":
    app()
