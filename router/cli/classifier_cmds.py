"""``ttc-router data import|split``, ``train``, ``predict``, ``eval``: the predictor's jobs."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

data_app = typer.Typer(help="Import and split outcome tables.", no_args_is_help=True)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[red]error[/]: {message}", highlight=False)
    return typer.Exit(2)


@contextmanager
def _errors() -> Iterator[None]:
    from router.errors import RouterError

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        yield
    except RouterError as exc:
        raise _fail(exc.message) from None


@contextmanager
def _bar(label: str) -> Iterator[Callable[[str, float], None]]:
    """A progress bar fed by ``progress(what, fraction)`` callbacks, on stderr."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn(label),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=err_console,
        transient=False,
    ) as bar:
        task = bar.add_task("", total=1.0)

        def update(what: str, fraction: float) -> None:
            bar.update(task, completed=min(max(fraction, 0.0), 1.0), description=what)

        yield update


def _tiers(spec: str | None) -> dict[str, str] | None:
    from classifier.importers.zeroeval import parse_tiers

    return None if spec is None else parse_tiers(spec)


def _prices(spec: str | None) -> Any:
    from classifier.importers.zeroeval import parse_prices

    return None if spec is None else parse_prices(spec)


@data_app.command("import")
def data_import(
    source: Annotated[
        str, typer.Argument(help="zeroeval | llmrouter | gsm8k-openai | FILE.csv/.jsonl")
    ],
    out: Annotated[Path, typer.Option("--out", help="outcome records to write (JSON Lines)")],
    tiers: Annotated[
        str | None,
        typer.Option(help="tier=model,... (llmrouter: the models to keep, tier names ignored)"),
    ] = None,
    prices: Annotated[
        str | None, typer.Option(help="tier=in/out,... USD per million tokens")
    ] = None,
    arms: Annotated[
        str | None, typer.Option(help="table files: the arm columns to use, comma-separated")
    ] = None,
    data: Annotated[Path, typer.Option(help="folder of the public data sets")] = DEFAULT_DATA,
    assumed_output_tokens: Annotated[
        int | None, typer.Option(help="llmrouter: output tokens assumed per answer (default 256)")
    ] = None,
) -> None:
    """Convert a public outcome table into outcome records (spec/outcomes.md)."""
    from classifier.jobs import import_source, mean_scores, write_records

    with _errors():
        records = import_source(
            source,
            data_dir=data,
            tiers=_tiers(tiers),
            prices=_prices(prices),
            arms=[a.strip() for a in arms.split(",") if a.strip()] if arms else None,
            assumed_output_tokens=assumed_output_tokens,
        )
        n = write_records(out, records)
    prompts = len({r.prompt_id for r in records})
    console.print(f"wrote {n} records ({prompts} prompts) to {out}", highlight=False)
    for arm, mean in mean_scores(records).items():
        console.print(f"  {arm:40s} mean score {mean:.3f}", highlight=False)


@data_app.command("split")
def data_split(
    outcomes: Annotated[Path, typer.Argument(help="outcome records (JSON Lines)")],
    train_out: Annotated[Path, typer.Option("--train-out")],
    test_out: Annotated[Path, typer.Option("--test-out")],
    test_fraction: Annotated[float, typer.Option()] = 0.2,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Split outcome records by prompt into a train and a test file (seeded)."""
    from classifier.jobs import read_many, split_records, write_records

    with _errors():
        train, test = split_records(read_many([outcomes]), test_fraction=test_fraction, seed=seed)
        write_records(train_out, train)
        write_records(test_out, test)
    console.print(
        f"train {len({r.prompt_id for r in train})} prompts → {train_out}; "
        f"test {len({r.prompt_id for r in test})} prompts → {test_out}",
        highlight=False,
    )


def train(
    outcomes: Annotated[list[Path], typer.Option("--outcomes", help="outcome files (repeatable)")],
    out: Annotated[Path, typer.Option("--out", help="model directory to write")],
    arms: Annotated[
        str | None, typer.Option(help="arms to train, comma-separated (default: all in the data)")
    ] = None,
    seed: Annotated[int, typer.Option()] = 0,
    test_fraction: Annotated[
        float, typer.Option(help="share of prompts held apart for the model's metrics")
    ] = 0.2,
    refit: Annotated[
        bool, typer.Option(help="refit on all prompts after measuring on the held-apart share")
    ] = True,
    prices: Annotated[
        str | None, typer.Option(help="tier=in/out,... recorded in the metadata")
    ] = None,
) -> None:
    """Train the predictor on outcome records; write ONNX, metadata and a model card."""
    from classifier.jobs import train_job
    from classifier.model_card import routing_lines

    with _errors(), _bar("train") as progress:
        meta = train_job(
            outcomes,
            out,
            arms=[a.strip() for a in arms.split(",") if a.strip()] if arms else None,
            seed=seed,
            test_fraction=test_fraction,
            refit=refit,
            prices=_prices(prices),
            progress=progress,
        )
    console.print(f"wrote {out} ({meta['version']})", highlight=False)
    routing = meta["metrics"].get("routing")
    if routing:
        console.print("\n".join(routing_lines(routing)), highlight=False)


def predict(
    model: Annotated[Path, typer.Option("--model", help="model directory")],
    prompts: Annotated[
        Path, typer.Option("--prompts", help="outcome file or JSONL of {prompt_id, prompt}")
    ],
    out: Annotated[Path, typer.Option("--out", help="predictions to write (JSON Lines)")],
) -> None:
    """Predict every arm's p_success and cost for each prompt (ONNX Runtime)."""
    from classifier.jobs import predict_job

    with _errors(), _bar("predict") as progress:
        n = predict_job(model, prompts, out, progress=progress)
    console.print(f"wrote {n} predictions to {out}", highlight=False)


def evaluate(
    model: Annotated[Path, typer.Option("--model", help="model directory")],
    outcomes: Annotated[list[Path], typer.Option("--outcomes", help="test outcome files")],
    train_outcomes: Annotated[
        list[Path] | None,
        typer.Option(help="the model's training files (default: as recorded in its metadata)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    plot: Annotated[Path | None, typer.Option(help="write a quality-vs-cost plot (PNG)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the learned baselines")] = 0,
) -> None:
    """Routing metrics of the model, the baselines and the oracle on test outcomes."""
    from classifier.jobs import eval_job, format_report

    with _errors():
        report = eval_job(model, outcomes, train_files=train_outcomes, plot=plot, seed=seed)
    if as_json:
        console.print_json(json.dumps(report, default=float))
    else:
        console.print(format_report(report), highlight=False)


def register(app: typer.Typer) -> None:
    """Add the commands to the ``ttc-router`` application."""
    app.add_typer(data_app, name="data")
    app.command("train")(train)
    app.command("predict")(predict)
    app.command("eval")(evaluate)


__all__ = ["data_app", "register"]
