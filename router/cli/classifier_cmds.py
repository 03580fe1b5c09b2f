"""``ttc-router data import|split``, ``train``, ``predict``, ``eval``, ``simulate``,
``retrain``: the predictor's jobs."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperCommand

data_app = typer.Typer(help="Import and split outcome tables.", no_args_is_help=True)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

SEED_MAX = 2**32 - 1  # what numpy's and scikit-learn's generators accept
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
    except OSError as exc:  # a file that could not be read or written: say which
        where = exc.filename if exc.filename is not None else "a file"
        raise _fail(f"{where}: {exc.strerror or exc}") from None


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


FILE_LIST_FLAGS = ("--outcomes", "--train-outcomes", "--plus")


def spread_file_lists(args: list[str], flags: tuple[str, ...] = FILE_LIST_FLAGS) -> list[str]:
    """``--outcomes A B C`` → ``--outcomes A --outcomes B --outcomes C``.

    click gives an option one value per flag; the file-list options of these commands take
    every following argument up to the next option, as ``--outcomes FILE…`` reads.
    """
    out: list[str] = []
    flag: str | None = None
    has_value = False
    for i, tok in enumerate(args):
        if tok == "--":
            return out + args[i:]
        if tok.startswith("-"):
            name = tok.split("=", 1)[0]
            flag = name if name in flags else None
            has_value = "=" in tok
        elif flag is not None:
            if has_value:
                out.append(flag)
            has_value = True
        out.append(tok)
    return out


class FileListCommand(TyperCommand):
    """A command whose file-list options take several files after one flag."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, spread_file_lists(list(args)))


def _tiers(spec: str | None) -> dict[str, str] | None:
    from classifier.importers.zeroeval import parse_tiers

    return None if spec is None else parse_tiers(spec)


def _prices(spec: str | None) -> Any:
    from classifier.importers.zeroeval import parse_prices

    return None if spec is None else parse_prices(spec)


@data_app.command("import")
def data_import(
    source: Annotated[
        str,
        typer.Argument(
            help="zeroeval | llmrouter | gsm8k-openai | alpaca-eval | FILE (.csv, .jsonl, .parquet)"
        ),
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
        int | None,
        typer.Option(min=1, help="llmrouter: output tokens assumed per answer (default 256)"),
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
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX)] = 0,
) -> None:
    """Split outcome records by prompt into a train and a test file (seeded).

    The split is stratified by task and by which arms succeeded on each prompt, so both
    files share each task's share and each arm's success rate; ``train`` holds apart its
    own check split the same way.
    """
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
    seen = {r.prompt for r in train}
    repeated = len({r.prompt_id for r in test if r.prompt in seen})
    if repeated:
        console.print(
            f"note: {repeated} test prompts repeat the text of a training prompt under another "
            "id (the table holds them twice); figures on them are not held out",
            highlight=False,
        )


def train(
    outcomes: Annotated[
        list[Path], typer.Option("--outcomes", help="outcome files, one or more: --outcomes A B")
    ],
    out: Annotated[Path, typer.Option("--out", help="model directory to write")],
    arms: Annotated[
        str | None, typer.Option(help="arms to train, comma-separated (default: all in the data)")
    ] = None,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX)] = 0,
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
    if "score_scale" in meta:
        lo, hi = meta["score_scale"]["lo"], meta["score_scale"]["hi"]
        console.print(
            f"scores run from {lo:g} to {hi:g}: trained on them mapped onto [0, 1]; "
            "predict reports p_success on the table's scale",
            highlight=False,
        )
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
    outcomes: Annotated[
        list[Path],
        typer.Option(
            "--outcomes", help="test outcome files, one or more (with --folds: the whole table)"
        ),
    ],
    model: Annotated[
        Path | None, typer.Option("--model", help="model directory to evaluate")
    ] = None,
    folds: Annotated[
        int | None,
        typer.Option(
            help="instead of --model: K-fold cross-validation on the outcome files (train "
            "the router and the baselines K times, test every prompt once)"
        ),
    ] = None,
    arms: Annotated[
        str | None, typer.Option(help="with --folds: comma-separated arms (default: all)")
    ] = None,
    train_outcomes: Annotated[
        list[Path] | None,
        typer.Option(
            help="the model's training files, one or more (default: as recorded in its metadata)"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    plot: Annotated[Path | None, typer.Option(help="write a quality-vs-cost plot (PNG)")] = None,
    seed: Annotated[
        int,
        typer.Option(
            min=0,
            max=SEED_MAX,
            help="seed of the learned baselines (with --folds: of everything)",
        ),
    ] = 0,
) -> None:
    """Routing metrics of the router, the baselines and the oracle on test outcomes: of a
    trained model (--model), or cross-validated on the outcome files (--folds K)."""
    from classifier.jobs import cv_job, eval_job, format_report

    if (model is None) == (folds is None):
        raise _fail(
            "give --model MODEL_DIR to evaluate a trained model, or --folds K to "
            "cross-validate the router on the outcome files (one of the two)"
        )
    if folds is not None and train_outcomes:
        raise _fail("--train-outcomes is for --model; --folds trains on the outcome files")
    if model is not None and arms:
        raise _fail("--arms is for --folds; a model routes the arms it was trained on")
    with _errors():
        if folds is not None:
            arm_list = [a.strip() for a in arms.split(",") if a.strip()] if arms else None
            with _bar("eval") as progress:
                report = cv_job(
                    outcomes, folds=folds, seed=seed, arms=arm_list, plot=plot, progress=progress
                )
        elif model is not None:
            report = eval_job(model, outcomes, train_files=train_outcomes, plot=plot, seed=seed)
    if as_json:
        console.print_json(json.dumps(report, default=float))
    else:
        console.print(format_report(report), highlight=False)


def simulate(
    source: Annotated[
        str, typer.Argument(help="mot-cascade | a folder laid out like it | FILE.jsonl of samples")
    ],
    out: Annotated[Path, typer.Option("--out", help="outcome records to write (JSON Lines)")],
    tiers: Annotated[
        str | None,
        typer.Option(
            help="tier=source,... in escalation order (mot-cascade: model folder, default "
            "cheap=llama2_13B,strong=GPT4; JSONL: the file's tier names, default all)"
        ),
    ] = None,
    k: Annotated[str, typer.Option("--k", help="vote sizes, comma-separated (2..64)")] = (
        "3,5,9,15,24"
    ),
    early_stop: Annotated[
        str, typer.Option(help="early-stop rules to replay: none, decided, adaptive")
    ] = "none,decided,adaptive",
    confidence: Annotated[
        float, typer.Option(help="adaptive: stop when P(leader ahead) reaches this")
    ] = 0.95,
    thresholds: Annotated[
        str, typer.Option(help="cascades: escalate when the first tier's agreement is below")
    ] = "0.6",
    prices: Annotated[
        str | None,
        typer.Option(help="tier=in/out,... USD per million tokens (mot-cascade has defaults)"),
    ] = None,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="seed of the sample orders")] = 0,
    permutations: Annotated[
        int, typer.Option(help="sample orders averaged per prompt and tier")
    ] = 10,
    limit: Annotated[int | None, typer.Option(help="replay only the first N prompts")] = None,
    task: Annotated[
        str | None, typer.Option(help="mot-cascade: task (gsm, crepe, ...; default gsm)")
    ] = None,
    variant: Annotated[
        str | None, typer.Option(help="mot-cascade: prompt variant (pot1, cot2, ...; default pot1)")
    ] = None,
    data: Annotated[Path, typer.Option(help="folder of the public data sets")] = DEFAULT_DATA,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Replay greedy, vote@k (with early stop) and escalation cascades on stored samples.

    Writes one outcome record per prompt and arm for train and eval, named as
    the service names them: tier/greedy (the first stored sample), tier/vote@k
    (early stop 'decided', the service's default), tier/vote-none@k,
    tier/vote-adaptive@k, and first-tier/escalate[-none|-adaptive]-aNN@k
    (escalate@k with threshold NN% to the last tier's greedy; both tiers are
    paid for). Votes read the samples in --permutations seeded orders,
    averaged; only the samples read are paid for.

    JSONL samples, one line per prompt and tier: {"prompt_id", "prompt",
    "tier" (or "arm"), "task"?, "gold" (or "reference"; not needed when every
    sample has a score), "input_tokens"? (default: counted from the prompt),
    "samples": [{"answer" (string/number/null; default: extracted from
    "text"), "output_tokens"? (default: counted from "text"), "text"?,
    "score"? (default: answer equals gold)}, ...]}.
    """
    from classifier.simulate.job import parse_floats, parse_ints, parse_rules, simulate_job
    from classifier.simulate.replay import SimulationConfig

    with _errors():
        config = SimulationConfig(
            ks=parse_ints(k, "--k"),
            rules=parse_rules(early_stop),
            confidence=confidence,
            thresholds=parse_floats(thresholds, "--thresholds"),
            permutations=permutations,
            seed=seed,
        )
        with _bar("simulate") as progress:
            _, report = simulate_job(
                source,
                out,
                data_dir=data,
                config=config,
                tiers=_tiers(tiers),
                prices=_prices(prices),
                task=task,
                variant=variant,
                limit=limit,
                progress=progress,
            )
    if as_json:
        console.print_json(json.dumps(report))
    else:
        _print_simulation(report)


def _print_simulation(report: dict[str, Any]) -> None:
    from rich.table import Table

    tiers = ", ".join(
        f"{t['tier']}"
        + (f"={t['model']}" if t["model"] else "")
        + f" ({t['samples_per_prompt']} samples, "
        f"${t['price']['input_per_mtok']:g}/${t['price']['output_per_mtok']:g} per M tokens)"
        for t in report["tiers"]
    )
    cfg = report["config"]
    console.print(
        f"{report['prompts']} prompts ({report['dropped_prompts']} dropped for missing samples); "
        f"{tiers}; {cfg['permutations']} orders, seed {cfg['seed']}",
        highlight=False,
    )
    table = Table()
    table.add_column("arm", no_wrap=True)
    for name in ("accuracy", "samples", "escal", "$/prompt", "out tok"):
        table.add_column(name, justify="right", no_wrap=True)
    for a in report["arms"]:
        table.add_row(
            a["arm"],
            f"{a['accuracy']:.3f}",
            f"{a['samples']:.2f}",
            "" if a["escalated"] is None else f"{a['escalated']:.2f}",
            f"{a['cost_usd']:.6f}",
            f"{a['output_tokens']:.0f}",
        )
    # Piped output (a file, a README) gets room for the arm names; a terminal keeps its width.
    wide = console if console.is_terminal else Console(file=console.file, width=100)
    wide.print(table)
    console.print(
        "greedy: the first stored sample; vote@k: majority of k samples, early stop "
        "'decided' (the service's default); vote-none@k, vote-adaptive@k: early stop "
        "'none' or 'adaptive'; escalate[-rule]-aNN@k: that vote on the first tier, then the "
        "last tier's greedy answer when the winner holds under NN% of the answering samples. "
        "samples, $ and tokens are means per prompt; escal is the share escalated.",
        highlight=False,
    )
    for note in report["skipped_arms"]:
        console.print(f"skipped {note}", highlight=False)
    console.print(f"wrote {report['records']} records to {report['out']}", highlight=False)


def retrain(
    logs: Annotated[Path, typer.Option("--logs", help="outcomes directory of the service")],
    out: Annotated[Path, typer.Option("--out", help="model directory to write the candidate to")],
    since: Annotated[
        str | None, typer.Option(help="only decisions from this UTC day on (YYYY-MM-DD)")
    ] = None,
    plus: Annotated[
        list[Path] | None,
        typer.Option("--plus", help="full-information benchmark tables to add, one or more"),
    ] = None,
    registry: Annotated[
        Path | None,
        typer.Option(help="model registry: compare with its promoted model, register, promote"),
    ] = None,
    current: Annotated[
        Path | None, typer.Option(help="the current model directory (without a registry)")
    ] = None,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX)] = 0,
    holdout: Annotated[
        float, typer.Option(help="share of prompts held apart to judge the candidate")
    ] = 0.2,
    margin_apgr: Annotated[
        float, typer.Option(help="APGR the candidate may lose within noise")
    ] = 0.05,
    margin_cost95: Annotated[
        float, typer.Option(help="cost@95 (share of always-best's cost) it may add within noise")
    ] = 0.10,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Train a candidate on logged traffic and promote it only if it is not worse.

    The candidate and the current model are compared on held-apart
    prompts: off-policy (IPS, self-normalised IPS, doubly robust) on the
    logs, exactly on --plus tables. The candidate is promoted only when
    the bootstrap intervals show it is not worse on APGR and cost@95
    beyond the margins. Exit code 0 whether or not it was promoted.
    """
    from datetime import date

    from classifier.retrain import format_report, retrain_job
    from router.errors import InvalidRequest

    with _errors():
        try:
            day = date.fromisoformat(since) if since else None
        except ValueError:
            raise InvalidRequest(f"--since {since!r} is not a date (YYYY-MM-DD)") from None
        with _bar("retrain") as progress:
            report = retrain_job(
                logs,
                out,
                since=day,
                plus=plus or [],
                registry_dir=registry,
                current_dir=current,
                seed=seed,
                holdout=holdout,
                apgr_margin=margin_apgr,
                cost_margin=margin_cost95,
                progress=progress,
            )
    if as_json:
        console.print_json(json.dumps(report, default=float))
    else:
        console.print(format_report(report), highlight=False)


def register(app: typer.Typer) -> None:
    """Add the commands to the ``ttc-router`` application."""
    app.add_typer(data_app, name="data")
    app.command("train", cls=FileListCommand)(train)
    app.command("predict")(predict)
    app.command("eval", cls=FileListCommand)(evaluate)
    app.command("simulate")(simulate)
    app.command("retrain", cls=FileListCommand)(retrain)


__all__ = ["data_app", "register"]
