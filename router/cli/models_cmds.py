"""``ttc-router models list|show|add|promote|rollback``: the predictor model registry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from classifier.registry import Registry

models_app = typer.Typer(
    help="Register predictor models, promote one for serving, roll back.", no_args_is_help=True
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

RegistryDir = Annotated[
    Path,
    typer.Option("--registry", envvar="TTC_MODEL_REGISTRY", help="the model registry directory"),
]
Reason = Annotated[str, typer.Option("--reason", help="why, kept in the registry's history")]


@contextmanager
def _registry(root: Path) -> Iterator[Registry]:
    """The registry at ``root``; a ttc-router error ends the command with its message."""
    from classifier.registry import Registry
    from router.errors import RouterError

    try:
        yield Registry(root)
    except RouterError as exc:
        err_console.print(f"[red]error[/]: {exc.message}", highlight=False)
        raise typer.Exit(2) from None


@models_app.command("list")
def list_models(registry: RegistryDir) -> None:
    """Every registered version, oldest first; `*` marks the promoted one."""
    with _registry(registry) as reg:
        entries = reg.list()
        current = reg.current_version()
    if not entries:
        console.print(f"no models in {registry}; add one with `ttc-router models add DIR`")
        return
    rows = [("", "version", "registered", "parent", "arms", "last promoted")]
    for e in entries:
        rows.append(
            (
                "*" if e.version == current else "",
                e.version,
                e.created,
                e.parent or "-",
                str(len(e.arms)),
                e.promoted[-1] if e.promoted else "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        line = "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True))
        console.print(line.rstrip(), highlight=False)
    if current is not None and current not in {e.version for e in entries}:
        err_console.print(f"[red]CURRENT names {current!r}, which is not registered[/]")


@models_app.command("show")
def show(version: str, registry: RegistryDir) -> None:
    """One version's registry entry, its directory and whether it is promoted."""
    with _registry(registry) as reg:
        entry = reg.show(version)
        doc: dict[str, Any] = {
            **entry.to_json(),
            "path": str(reg.path(version)),
            "current": reg.current_version() == version,
        }
    console.print_json(json.dumps(doc))


@models_app.command("add")
def add(
    model_dir: Annotated[Path, typer.Argument(help="a model directory written by `train`")],
    registry: RegistryDir,
    parent: Annotated[
        str | None, typer.Option("--parent", help="the registered version it derives from")
    ] = None,
    metrics: Annotated[
        Path | None, typer.Option("--metrics", help="a JSON file of metrics to keep with it")
    ] = None,
    data_digest: Annotated[
        str | None, typer.Option("--data-digest", help="digest of the training data")
    ] = None,
) -> None:
    """Copy a model directory into the registry under its metadata version."""
    metrics_doc: dict[str, Any] | None = None
    if metrics is not None:
        try:
            metrics_doc = json.loads(metrics.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            err_console.print(f"[red]error[/]: cannot read {metrics}: {exc}", highlight=False)
            raise typer.Exit(2) from None
        if not isinstance(metrics_doc, dict):
            err_console.print(f"[red]error[/]: {metrics} must hold a JSON object")
            raise typer.Exit(2)
    with _registry(registry) as reg:
        version = reg.add(model_dir, parent=parent, metrics=metrics_doc, data_digest=data_digest)
    console.print(f"registered {version}; serve it with `ttc-router models promote {version}`")


@models_app.command("promote")
def promote(version: str, registry: RegistryDir, reason: Reason = "") -> None:
    """Make VERSION the served model; servers watching the registry swap to it."""
    with _registry(registry) as reg:
        previous = reg.promote(version, reason)
    console.print(f"promoted {version} (was {previous or 'none'})", highlight=False)


@models_app.command("rollback")
def rollback(registry: RegistryDir, reason: Reason = "") -> None:
    """Promote again the version that was promoted before the current one."""
    with _registry(registry) as reg:
        previous = reg.current_version()
        version = reg.rollback(reason)
    console.print(f"rolled back to {version} (was {previous})", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``models`` command group to the ``ttc-router`` app."""
    app.add_typer(models_app, name="models")
