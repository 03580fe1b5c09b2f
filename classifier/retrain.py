"""``ttc-router retrain``: train a candidate predictor on logged traffic, judge it against the
current model off-policy, and promote it only when it is not worse beyond noise.

1. Read the scored decision records of an outcomes directory
   (``router.outcomes.logs.read_logs``), optionally from a day on. Records of arms the
   current model does not predict, records without a ``propensity``, requests served by a
   fallback tier and records that are not valid outcome records are skipped and counted.
2. Split the prompts (logged and ``--plus`` benchmark tables together, by prompt text, so
   one prompt never lands on both sides) into a training part and a held-apart share
   (seeded, :func:`held_apart`).
3. Train the candidate on the logged training records, weighted by 1 / propensity, plus the
   benchmark tables' training records (full information, weight 1), on the current model's
   arms; write it to the output directory.
4. Evaluate the candidate and the current model on the held-apart share: on the logged
   records with IPS, self-normalised IPS and doubly robust estimates
   (``classifier.offpolicy``) over the arms the held-apart log offers; on full-information
   benchmark prompts exactly, with the spec's definitions. DR's direct model is the
   candidate's predictions for every arm, shared by both policies: the candidate never saw
   the held-apart prompts, so these are out-of-sample predictions, and sharing them makes
   every prompt on which both models choose the same arm add nothing to the difference.
5. Gate: a paired bootstrap over held-apart prompts (``n_boot`` replicates, seeded) gives a
   two-sided ``level`` interval of the APGR gain (candidate − current) and of the cost@95
   saving (current − candidate, each capped at 1.0 = always-best, unreached counting as
   1.0). The logged traffic is what the router serves, so it must show the candidate
   *non-inferior*: the lower end of both DR intervals at least −margin (``APGR_MARGIN``,
   ``COST95_MARGIN``); with the default 90 % interval this is a one-sided 95 % test that
   the candidate is at most ``margin`` worse, so a real improvement on little data is
   kept back until the logs are large enough to show it. Held-apart full-information
   prompts (from ``--plus``) are a guard: they refuse a candidate *shown to be worse*
   there (the upper end of an interval below −margin); when the held-apart log cannot be
   evaluated, they must show non-inferiority instead. IPS and self-normalised IPS are
   reported beside DR as a cross-check.
6. Write ``retrain_report.json`` and ``RETRAIN_REPORT.md`` into the output directory (the
   metrics also go into ``metadata.json``); with a registry, add the candidate as a new
   version (parent: the current version; the training data's digest; the metrics) and
   promote it when the gate passed.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from classifier import offpolicy as op
from classifier.outcomes_io import OutcomeRecord, parse_record, prepare_output, read_outcomes
from classifier.score_scale import require_unit_scores
from router.errors import InvalidRequest, RouterError

Progress = Callable[[str, float], None]

DEFAULT_HOLDOUT = 0.2
APGR_MARGIN = 0.05
COST95_MARGIN = 0.10
GATE_ESTIMATOR = "dr"
REPORT_JSON = "retrain_report.json"
REPORT_MD = "RETRAIN_REPORT.md"
GATE_RULE = (
    "promote only if the lower end of the {level:.0%} paired-bootstrap interval of the APGR "
    "gain (candidate - current) and of the cost@95 saving (current - candidate; capped at "
    "1.0, unreached = 1.0) on the held-apart logs (DR) is >= -margin, and on held-apart "
    "full-information prompts the upper end is not below -margin (the candidate is not "
    "shown to be worse there; without logged records these must show the lower end >= "
    "-margin instead)"
)


def _no_progress(what: str, fraction: float) -> None:
    return None


def prompt_key(text: str) -> str:
    """The key prompts are split and resampled by: a digest of the prompt text."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def held_apart(keys: Sequence[str], seed: int, holdout: float) -> set[str]:
    """The held-apart prompt keys: ``ceil(holdout × distinct keys)`` of them, a seeded
    permutation of the sorted keys (``classifier.train.split_prompts``)."""
    from classifier.train import split_prompts

    if not 0.0 < holdout < 1.0:
        raise InvalidRequest(f"--holdout must be in (0, 1), got {holdout}")
    return split_prompts(sorted(set(keys)), seed, holdout)


@dataclass
class Skipped:
    """Log records left out, by reason."""

    unknown_arm: dict[str, int] = field(default_factory=dict)
    no_propensity: int = 0
    fallback: int = 0
    invalid: int = 0
    first_invalid: str | None = None

    @property
    def total(self) -> int:
        return sum(self.unknown_arm.values()) + self.no_propensity + self.fallback + self.invalid

    def to_json(self) -> dict[str, Any]:
        return {
            "unknown_arm": dict(sorted(self.unknown_arm.items())),
            "no_propensity": self.no_propensity,
            "fallback": self.fallback,
            "invalid": self.invalid,
            "first_invalid": self.first_invalid,
        }


def logged_records(
    rows: Sequence[Mapping[str, Any]], arms: Sequence[str] | None
) -> tuple[list[OutcomeRecord], Skipped]:
    """Valid scored log rows with a propensity, of the given arms (all when None).

    A request that fell back to another tier (``fallback_from`` set) is left out: its
    ``arm`` is the one that ran, while its ``propensity`` is that of the arm the policy
    chose, so it fits neither arm's inverse-propensity weight.
    """
    known = set(arms) if arms is not None else None
    skipped = Skipped()
    out: list[OutcomeRecord] = []
    for i, row in enumerate(rows):
        where = f"log record {row.get('decision_id') or i}"
        try:
            rec = parse_record(row, where=where)
            require_unit_scores([rec], where)
        except InvalidRequest as exc:
            skipped.invalid += 1
            skipped.first_invalid = skipped.first_invalid or exc.message
            continue
        if known is not None and rec.arm not in known:
            skipped.unknown_arm[rec.arm] = skipped.unknown_arm.get(rec.arm, 0) + 1
            continue
        if rec.propensity is None:
            skipped.no_propensity += 1
            continue
        if row.get("fallback_from"):
            skipped.fallback += 1
            continue
        out.append(rec)
    return out, skipped


def read_scored_logs(directory: Path, since: date | None) -> list[dict[str, Any]]:
    """Scored decision records of an outcomes directory, each decision once."""
    from router.outcomes.logs import read_logs

    if not directory.is_dir():
        raise InvalidRequest(f"--logs {directory}: not a directory")
    try:
        return read_logs(directory, since=since, scored_only=True)
    except RouterError:
        raise
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"--logs {directory}: cannot read the outcome log: {exc}") from None


def data_digest(records: Sequence[OutcomeRecord]) -> str:
    """sha256 of the training records in a canonical order and form."""
    lines = sorted(json.dumps(r.to_json(), sort_keys=True, ensure_ascii=False) for r in records)
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


@dataclass
class _Current:
    """The model the candidate must beat."""

    model_dir: Path | None
    version: str | None
    registry_version: str | None
    arms: list[str] | None
    prices: dict[str, Any]


def _resolve_current(registry: Any, current_dir: Path | None) -> _Current:
    from classifier.predictor import OnnxPredictor

    if registry is not None:
        version = registry.current_version()
        if version is None:
            return _Current(None, None, None, None, {})
        model_dir = Path(registry.path(version))
    elif current_dir is not None:
        model_dir, version = current_dir, None
    else:
        raise InvalidRequest("give the current model: --registry DIR or --current MODEL_DIR")
    predictor = OnnxPredictor.load(model_dir)
    return _Current(
        model_dir,
        predictor.version,
        version,
        list(predictor.arms),
        dict(predictor.metadata.get("prices_used") or {}),
    )


@dataclass(frozen=True)
class Check:
    """One condition of the promotion gate.

    ``rule`` ``non-inferior`` passes when the interval's lower end is at least -margin
    (the candidate is shown to be at most ``margin`` worse); ``not-worse`` passes unless its
    upper end is below -margin (the candidate is shown to be worse).
    """

    data: str
    metric: str
    rule: str
    interval: op.Interval
    margin: float

    @property
    def passed(self) -> bool:
        iv = self.interval
        if self.rule == "non-inferior":
            return not math.isnan(iv.low) and iv.low >= -self.margin
        return math.isnan(iv.high) or iv.high >= -self.margin

    def describe(self) -> str:
        what = "APGR gain" if self.metric == "apgr" else "cost@95 saving"
        iv = self.interval
        if math.isnan(iv.low):
            return (
                f"{what} on {self.data} is undefined (the estimated best arm is no better "
                "than the cheap arm)"
            )
        end, value = ("lower", iv.low) if self.rule == "non-inferior" else ("upper", iv.high)
        verdict = "not below" if value >= -self.margin else "below"
        return (
            f"{what} on {self.data} {iv.point:+.3f} (CI {iv.low:+.3f} .. {iv.high:+.3f}): "
            f"{end} end {verdict} -{self.margin:g}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "metric": self.metric,
            "rule": self.rule,
            "margin": self.margin,
            "passed": self.passed,
            **self.interval.to_json(),
        }


def _comparison_json(cmp: op.Comparison, arms: list[str]) -> dict[str, Any]:
    return {
        "candidate": cmp.candidate.summary(arms),
        "current": cmp.current.summary(arms),
        "apgr_gain": cmp.apgr_gain.to_json(),
        "cost95_saving": cmp.cost95_saving.to_json(),
    }


def _columns(model_arms: Sequence[str], arms: Sequence[str]) -> NDArray[np.int64]:
    pos = {a: j for j, a in enumerate(model_arms)}
    return np.asarray([pos[a] for a in arms], np.int64)


@dataclass
class _Tables:
    """Both models' predictions for the held-apart prompt texts (rows by text)."""

    row: dict[str, int]
    candidate: Any
    candidate_arms: list[str]
    current: Any | None
    current_arms: list[str]

    def policy(self, which: str, texts: Sequence[str], arms: Sequence[str]) -> op.Policy:
        table = self.candidate if which == "candidate" else self.current
        if table is None:
            raise InvalidRequest("there is no current model to predict with")
        model_arms = self.candidate_arms if which == "candidate" else self.current_arms
        rows = np.asarray([self.row[t] for t in texts], np.int64)
        cols = _columns(model_arms, arms)
        return op.Policy.build(
            table.p_success[np.ix_(rows, cols)], table.cost_usd[np.ix_(rows, cols)]
        )


def _evaluate_logs(
    recs: Sequence[OutcomeRecord], tables: _Tables, *, n_boot: int, seed: int, level: float
) -> tuple[dict[str, Any], op.Comparison | None]:
    arms = sorted({r.arm for r in recs})
    out: dict[str, Any] = {"records": len(recs), "arms": arms}
    if len(arms) < 2:
        out["skipped"] = "fewer than two arms in the held-apart log: no routing to evaluate"
        return out, None
    col = {a: j for j, a in enumerate(arms)}
    texts = [r.prompt for r in recs]
    logged = op.Logged.build(
        [col[r.arm] for r in recs],
        [r.score for r in recs],
        [r.cost_usd for r in recs],
        [r.propensity or 1.0 for r in recs],
        n_arms=len(arms),
        group=[prompt_key(t) for t in texts],
    )
    cand = tables.policy("candidate", texts, arms)
    direct = (cand.p, cand.cost)
    out["direct_model"] = "candidate predictions (out-of-sample), shared by both policies"
    out["estimators"] = {}
    gate: op.Comparison | None = None
    for kind in op.ESTIMATORS:
        est = op.estimator(kind, logged, direct)
        if tables.current is None:
            out["estimators"][kind] = {"candidate": op.estimate(est, cand).summary(arms)}
            continue
        curr = tables.policy("current", texts, arms)
        cmp = op.compare(cand, curr, est, n_boot=n_boot, seed=seed, level=level)
        out["estimators"][kind] = _comparison_json(cmp, arms)
        if kind == GATE_ESTIMATOR:
            gate = cmp
    return out, gate


def _evaluate_full(
    recs: Sequence[OutcomeRecord],
    model_arms: Sequence[str],
    tables: _Tables,
    *,
    n_boot: int,
    seed: int,
    level: float,
) -> tuple[dict[str, Any] | None, op.Comparison | None]:
    from classifier.train import cell_means

    have = {r.arm for r in recs}
    arms = [a for a in model_arms if a in have]
    if len(arms) < 2:
        return None, None
    ids = sorted({r.prompt_id for r in recs})
    pos = {pid: i for i, pid in enumerate(ids)}
    s, c, present = cell_means(recs, pos, arms)
    full = present.all(axis=1)
    if not full.any():
        return None, None
    text = {r.prompt_id: r.prompt for r in recs}
    texts = [text[pid] for pid, ok in zip(ids, full, strict=True) if ok]
    fi = op.FullInformation.build(s[full], c[full], group=[prompt_key(t) for t in texts])
    cand = tables.policy("candidate", texts, arms)
    out: dict[str, Any] = {"prompts": int(full.sum()), "arms": arms}
    if tables.current is None:
        out["exact"] = {"candidate": op.estimate(fi, cand).summary(arms)}
        return out, None
    curr = tables.policy("current", texts, arms)
    cmp = op.compare(cand, curr, fi, n_boot=n_boot, seed=seed, level=level)
    out["exact"] = _comparison_json(cmp, arms)
    return out, cmp


def _gate(
    logs_cmp: op.Comparison | None,
    full_cmp: op.Comparison | None,
    apgr_margin: float,
    cost_margin: float,
) -> list[Check]:
    """Logged traffic must show non-inferiority; benchmark prompts veto a candidate shown
    to be worse on them (they must show non-inferiority when there is no logged check)."""
    parts: list[tuple[str, op.Comparison, str]] = []
    if logs_cmp is not None:
        parts.append((f"held-apart logs ({GATE_ESTIMATOR.upper()})", logs_cmp, "non-inferior"))
    if full_cmp is not None:
        rule = "not-worse" if logs_cmp is not None else "non-inferior"
        parts.append(("held-apart full-information prompts (exact)", full_cmp, rule))
    checks: list[Check] = []
    for data, cmp, rule in parts:
        checks.append(Check(data, "apgr", rule, cmp.apgr_gain, apgr_margin))
        checks.append(Check(data, "cost@95", rule, cmp.cost95_saving, cost_margin))
    return checks


def retrain_job(
    logs: Path,
    out_dir: Path,
    *,
    since: date | None = None,
    plus: Sequence[Path] = (),
    registry_dir: Path | None = None,
    current_dir: Path | None = None,
    seed: int = 0,
    holdout: float = DEFAULT_HOLDOUT,
    n_boot: int = op.DEFAULT_BOOTSTRAP,
    level: float = op.DEFAULT_LEVEL,
    apgr_margin: float = APGR_MARGIN,
    cost_margin: float = COST95_MARGIN,
    embedder: Any = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train, evaluate, gate and (with a registry) register and promote; returns the report.

    The report's ``promoted`` says whether the gate passed; ``reason`` says why.
    """
    from classifier.embedding_cache import CachedPromptEmbedder
    from classifier.features import feature_names, features_for
    from classifier.onnx_export import save_model
    from classifier.predictor import OnnxPredictor
    from classifier.train import train

    report_progress = progress or _no_progress
    t0 = time.perf_counter()
    if registry_dir is not None and current_dir is not None:
        raise InvalidRequest("give either --registry or --current, not both")
    if not 0.0 < holdout < 1.0:
        raise InvalidRequest(f"--holdout must be in (0, 1), got {holdout}")
    if n_boot < 20:
        raise InvalidRequest("the bootstrap needs at least 20 replicates")
    if apgr_margin < 0 or cost_margin < 0:
        raise InvalidRequest("margins must be >= 0")
    prepare_output(out_dir, "--out")
    registry: Any = None
    if registry_dir is not None:
        from classifier.registry import Registry

        registry = Registry(registry_dir)
    current = _resolve_current(registry, current_dir)
    if current.model_dir is not None and out_dir.resolve() == current.model_dir.resolve():
        raise InvalidRequest(f"--out {out_dir} is the current model's directory; give a new one")

    report_progress("reading logs", 0.0)
    rows = read_scored_logs(logs, since)
    logged, skipped = logged_records(rows, current.arms)
    if not logged:
        raise InvalidRequest(
            f"--logs {logs}: no usable scored records"
            + (f" since {since.isoformat()}" if since else "")
            + f" ({len(rows)} scored records read, {skipped.total} skipped: "
            + json.dumps(skipped.to_json())
            + ")"
        )
    plus_recs: list[OutcomeRecord] = []
    plus_files: list[dict[str, Any]] = []
    plus_unknown: dict[str, int] = {}
    for f in plus:
        got = read_outcomes(f)
        if not got:
            raise InvalidRequest(f"--plus {f}: no outcome records")
        require_unit_scores(got, f"--plus {f}")
        kept = [r for r in got if current.arms is None or r.arm in current.arms]
        for r in got:
            if current.arms is not None and r.arm not in current.arms:
                plus_unknown[r.arm] = plus_unknown.get(r.arm, 0) + 1
        plus_files.append({"path": str(f.resolve()), "records": len(got), "used": len(kept)})
        plus_recs.extend(kept)

    keys = [prompt_key(r.prompt) for r in (*logged, *plus_recs)]
    apart = held_apart(keys, seed, holdout)
    log_train = [r for r in logged if prompt_key(r.prompt) not in apart]
    log_test = [r for r in logged if prompt_key(r.prompt) in apart]
    plus_train = [r for r in plus_recs if prompt_key(r.prompt) not in apart]
    plus_test = [r for r in plus_recs if prompt_key(r.prompt) in apart]
    train_recs = [*log_train, *plus_train]
    arms = list(current.arms) if current.arms is not None else sorted({r.arm for r in train_recs})
    missing = [a for a in arms if not any(r.arm == a for r in train_recs)]
    if missing:
        raise InvalidRequest(
            f"no training records for arm(s) {missing} of the current model; give a "
            "benchmark table that covers them with --plus"
        )
    if len(arms) < 2:
        raise InvalidRequest(f"need at least two arms to route, the data has {arms}")

    emb = embedder or CachedPromptEmbedder()

    def featurize(texts: Sequence[str]) -> Any:
        distinct = list(dict.fromkeys(texts))
        report_progress(f"embedding {len(distinct)} distinct prompts", 0.05)
        vectors = emb.embed(distinct)
        row = {t: i for i, t in enumerate(distinct)}
        return features_for(vectors[[row[t] for t in texts]], texts)

    def train_progress(what: str, fraction: float) -> None:
        report_progress(f"training: {what}", 0.05 + 0.6 * fraction)

    model = train(
        train_recs,
        seed=seed,
        arms=arms,
        featurize=featurize,
        feature_names=feature_names(emb.dim),
        test_fraction=0.0,
        refit=False,
        progress=train_progress,
    )
    model.prices = {a: p for a, p in current.prices.items() if a in arms}
    digest = data_digest(train_recs)
    training_data = {
        "logs": str(logs.resolve()),
        "since": since.isoformat() if since else None,
        "log_records": len(log_train),
        "plus_files": plus_files,
        "plus_records": len(plus_train),
        "records": len(train_recs),
        "records_sha256": digest,
        "held_apart": f"{holdout:g} of prompts by text digest, seed {seed}",
    }
    meta = save_model(model, out_dir, version_prefix="model", training_data=training_data)

    report_progress("evaluating", 0.7)
    test_texts = sorted({r.prompt for r in (*log_test, *plus_test)})
    logs_eval: dict[str, Any] = {"records": 0, "arms": []}
    full_eval: dict[str, Any] | None = None
    logs_cmp = full_cmp = None
    if test_texts:
        e = emb.embed(test_texts)
        cand_pred = OnnxPredictor.load(out_dir)
        curr_pred = OnnxPredictor.load(current.model_dir) if current.model_dir else None
        tables = _Tables(
            {t: i for i, t in enumerate(test_texts)},
            cand_pred.predict_table(e, test_texts),
            list(cand_pred.arms),
            curr_pred.predict_table(e, test_texts) if curr_pred else None,
            list(curr_pred.arms) if curr_pred else [],
        )
        if log_test:
            logs_eval, logs_cmp = _evaluate_logs(
                log_test, tables, n_boot=n_boot, seed=seed, level=level
            )
        if plus_test:
            full_eval, full_cmp = _evaluate_full(
                plus_test, arms, tables, n_boot=n_boot, seed=seed, level=level
            )
    checks = _gate(logs_cmp, full_cmp, apgr_margin, cost_margin)
    if current.model_dir is None:
        promoted, reason = True, "no model was promoted before: the candidate is the first"
    elif not checks:
        promoted = False
        reason = (
            "nothing to judge the candidate on: the held-apart share has no logged records "
            "of two or more arms and no full-information prompts (more logs, a larger "
            "--holdout or --plus tables)"
        )
    else:
        failed = [c for c in checks if not c.passed]
        promoted = not failed
        if promoted:
            reason = "not worse than the current model beyond the margins: " + "; ".join(
                c.describe() for c in checks
            )
        else:
            reason = "not shown to be within the margins of the current model: " + "; ".join(
                c.describe() for c in failed
            )
    report: dict[str, Any] = {
        "promoted": promoted,
        "decision": "promote" if promoted else "keep current",
        "reason": reason,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "candidate": {"version": meta["version"], "model_dir": str(out_dir)},
        "current": {
            "version": current.version,
            "model_dir": str(current.model_dir) if current.model_dir else None,
        },
        "data": {
            "logs": str(logs),
            "since": since.isoformat() if since else None,
            "scored_log_records": len(rows),
            "skipped_log_records": skipped.to_json(),
            "skipped_plus_records": {"unknown_arm": dict(sorted(plus_unknown.items()))},
            "train": {
                "logged_records": len(log_train),
                "plus_records": len(plus_train),
                "prompts": model.counts["prompts"],
                "records_sha256": digest,
            },
            "held_apart": {
                "share": holdout,
                "logged_records": len(log_test),
                "plus_records": len(plus_test),
            },
            "seed": seed,
        },
        "gate": {
            "estimator": GATE_ESTIMATOR,
            "level": level,
            "bootstrap_replicates": n_boot,
            "margins": {"apgr": apgr_margin, "cost@95": cost_margin},
            "rule": GATE_RULE.format(level=level),
            "checks": [c.to_json() for c in checks],
        },
        "evaluation": {"logs": logs_eval, "full_information": full_eval},
    }
    _write_report(out_dir, report)
    if registry is not None:
        version = registry.add(
            out_dir,
            parent=current.registry_version,
            metrics=_registry_metrics(report),
            data_digest=digest,
        )
        report["candidate"]["registry_version"] = version
        if promoted:
            registry.promote(version, f"ttc-router retrain: {reason}")
        report["registry"] = {
            "root": str(registry_dir),
            "added": version,
            "promoted": promoted,
            "current": registry.current_version(),
        }
    report["seconds"] = round(time.perf_counter() - t0, 1)
    _write_report(out_dir, report)
    report_progress("done", 1.0)
    return report


def _headline(report: Mapping[str, Any]) -> dict[str, Any]:
    """The candidate's APGR and cost@95: DR on the held-apart logs, exact on benchmarks."""
    out: dict[str, Any] = {}
    dr = report["evaluation"]["logs"].get("estimators", {}).get(GATE_ESTIMATOR)
    if dr:
        out["logs_dr"] = {k: dr["candidate"][k] for k in ("apgr", "cost_at_95")}
    full = report["evaluation"]["full_information"]
    if full:
        out["full_information_exact"] = {
            k: full["exact"]["candidate"][k] for k in ("apgr", "cost_at_95")
        }
    return out


def _registry_metrics(report: Mapping[str, Any]) -> dict[str, Any]:
    """What the registry keeps with the version: the decision and the gate's numbers."""
    return {
        "retrain": {
            "candidate": _headline(report),
            "date": report["date"],
            "promoted": report["promoted"],
            "reason": report["reason"],
            "current": report["current"]["version"],
            "gate": report["gate"]["checks"],
            "held_apart": report["data"]["held_apart"],
        }
    }


def _write_report(out_dir: Path, report: Mapping[str, Any]) -> None:
    from classifier.predictor import METADATA_FILE

    text = json.dumps(report, indent=2, default=float) + "\n"
    _replace(out_dir / REPORT_JSON, text)
    _replace(out_dir / REPORT_MD, format_report(report) + "\n")
    meta_path = out_dir / METADATA_FILE
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["metrics"] = {**meta.get("metrics", {}), **_registry_metrics(report)}
    _replace(meta_path, json.dumps(meta, indent=2) + "\n")


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _fmt(x: Any) -> str:
    if x is None:
        return "unreached"
    if isinstance(x, float):
        return "n/a" if math.isnan(x) else f"{x:.3f}"
    return str(x)


def _interval(iv: Mapping[str, Any]) -> str:
    if iv.get("point") is None:
        return "n/a"
    low, high = iv.get("low"), iv.get("high")
    ci = "" if low is None else f" [{low:+.3f}, {high:+.3f}]"
    return f"{iv['point']:+.3f}{ci}"


def format_report(report: Mapping[str, Any]) -> str:
    """The report as text: the decision, a table of every estimate, the data used."""
    gate = report["gate"]
    data = report["data"]
    cand, curr = report["candidate"], report["current"]
    if report["promoted"]:
        head = f"PROMOTE: candidate {cand['version']} replaces {curr['version'] or '(none)'}"
        if "registry" not in report:
            head += f" (no registry given: serve {cand['model_dir']} to put it in use)"
    else:
        head = f"KEEP CURRENT: {curr['version']} stays; candidate {cand['version']} refused"
    lines = [
        head,
        f"reason: {report['reason']}",
        "",
        f"| data | estimator | APGR cand | APGR curr | APGR gain [{gate['level']:.0%} CI] "
        "| cost@95 cand | cost@95 curr | cost@95 saving [CI] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows: list[tuple[str, str, Mapping[str, Any]]] = []
    logs_eval = report["evaluation"]["logs"]
    for kind, entry in logs_eval.get("estimators", {}).items():
        mark = " (gate)" if kind == gate["estimator"] else ""
        rows.append((f"logs, {logs_eval['records']} requests", kind + mark, entry))
    full = report["evaluation"]["full_information"]
    if full:
        rows.append((f"full-information, {full['prompts']} prompts", "exact (gate)", full["exact"]))
    for where, kind, e in rows:
        c = e["candidate"]
        r = e.get("current") or {}
        lines.append(
            f"| {where} | {kind} | {_fmt(c['apgr'])} | {_fmt(r.get('apgr'))} | "
            f"{_interval(e.get('apgr_gain') or {})} | {_fmt(c['cost_at_95'])} | "
            f"{_fmt(r.get('cost_at_95')) if r else 'n/a'} | "
            f"{_interval(e.get('cost95_saving') or {})} |"
        )
    sk = data["skipped_log_records"]
    unknown = ", ".join(f"{a}: {n}" for a, n in sk["unknown_arm"].items()) or "none"
    lines += [
        "",
        f"Gate: {gate['rule']}; margins APGR {gate['margins']['apgr']:g}, cost@95 "
        f"{gate['margins']['cost@95']:g}; {gate['bootstrap_replicates']} bootstrap replicates.",
        f"Logs: {data['scored_log_records']} scored records read; skipped: arms the current "
        f"model does not know ({unknown}), {sk['no_propensity']} without propensity, "
        f"{sk['fallback']} served by a fallback tier, {sk['invalid']} invalid.",
        f"Training: {data['train']['logged_records']} logged records (weighted by "
        f"1/propensity) + {data['train']['plus_records']} benchmark records; held apart: "
        f"{data['held_apart']['logged_records']} logged records, "
        f"{data['held_apart']['plus_records']} benchmark records.",
    ]
    if "registry" in report:
        reg = report["registry"]
        lines.append(
            f"Registry {reg['root']}: added {reg['added']}"
            + (", promoted" if reg["promoted"] else ", not promoted")
            + f"; current version {reg['current']}."
        )
    return "\n".join(lines)


__all__ = [
    "APGR_MARGIN",
    "COST95_MARGIN",
    "DEFAULT_HOLDOUT",
    "GATE_ESTIMATOR",
    "REPORT_JSON",
    "REPORT_MD",
    "Check",
    "Skipped",
    "data_digest",
    "format_report",
    "held_apart",
    "logged_records",
    "prompt_key",
    "read_scored_logs",
    "retrain_job",
]
