"""The model registry (add, list, show, promote, rollback, history, atomic CURRENT) and the
slot that swaps its promoted version into a running core."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from classifier.predictor import default_model_dir
from classifier.registry import CURRENT_FILE, HISTORY_FILE, Registry, write_atomic
from router.api.metrics import count_model_swap
from router.core.model_slot import ModelSlot
from router.core.service import RouterCore
from router.core.types import ArmPrediction, Prediction
from router.errors import ConfigError, InvalidRequest, ModelError, NotFound
from tests.unit.fakes import PREDICTIONS, FakePredictor, make_core

PER_ARM_KEYS = ("tokens_hi_log_offset", "samples_per_call", "tokens_observed", "prices_used")


def model_variant(
    dst: Path,
    version: str,
    *,
    rename_arms: Mapping[str, str] | None = None,
    src: Path | None = None,
) -> Path:
    """A copy of the shipped model under another metadata version (the ONNX file and its
    digest unchanged), optionally with its arms renamed consistently."""
    src = src or default_model_dir()
    dst.mkdir(parents=True)
    for name in ("model.onnx", "MODEL_CARD.md"):
        shutil.copyfile(src / name, dst / name)
    meta = json.loads((src / "metadata.json").read_text())
    meta["version"] = version
    if rename_arms:
        meta["arms"] = [rename_arms.get(a, a) for a in meta["arms"]]
        for key in PER_ARM_KEYS:
            if isinstance(meta.get(key), dict):
                meta[key] = {rename_arms.get(a, a): v for a, v in meta[key].items()}
    (dst / "metadata.json").write_text(json.dumps(meta, indent=2))
    return dst


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


@pytest.fixture
def three(tmp_path: Path, reg: Registry) -> list[str]:
    """Three registered versions of the same model: v1, v2 (parent v1), v3 (parent v2)."""
    v1 = reg.add(model_variant(tmp_path / "m1", "v1"))
    v2 = reg.add(model_variant(tmp_path / "m2", "v2"), parent=v1)
    v3 = reg.add(model_variant(tmp_path / "m3", "v3"), parent=v2)
    return [v1, v2, v3]


def test_add_copies_the_model_and_records_its_entry(tmp_path: Path, reg: Registry) -> None:
    src = model_variant(tmp_path / "m", "trained-1")
    version = reg.add(src, metrics={"brier": 0.18}, data_digest="sha256:abc")
    assert version == "trained-1"
    d = reg.path(version)
    assert d == reg.root / "versions" / "trained-1"
    for name in ("model.onnx", "metadata.json", "MODEL_CARD.md", "registry.json"):
        assert (d / name).is_file(), name
    assert (d / "model.onnx").read_bytes() == (src / "model.onnx").read_bytes()
    entry = reg.show(version)
    assert entry.version == "trained-1"
    assert entry.parent is None
    assert entry.metrics == {"brier": 0.18}
    assert entry.data_digest == "sha256:abc"
    assert entry.arms == ("local-7b/greedy", "mid-32b/greedy", "premium/greedy")
    assert entry.promoted == ()
    assert entry.created
    # the copy is independent of the source and loads on its own
    shutil.rmtree(src)
    assert reg.load(version).version == "trained-1"
    assert reg.current_version() is None


def test_list_is_oldest_first_and_skips_unfinished_copies(reg: Registry, three: list[str]) -> None:
    (reg.root / "versions" / ".add-v9-0123").mkdir()
    listed = reg.list()
    assert [e.version for e in listed] == three
    assert [e.parent for e in listed] == [None, "v1", "v2"]


def test_list_of_an_empty_registry(reg: Registry) -> None:
    assert reg.list() == []
    assert reg.current_version() is None
    assert reg.history() == []


def test_a_version_is_registered_once(tmp_path: Path, reg: Registry) -> None:
    reg.add(model_variant(tmp_path / "a", "same"))
    with pytest.raises(InvalidRequest, match="already in the registry"):
        reg.add(model_variant(tmp_path / "b", "same"))
    assert [e.version for e in reg.list()] == ["same"]
    assert [p.name for p in (reg.root / "versions").iterdir()] == ["same"]


@pytest.mark.parametrize("damage", ["truncated onnx", "no metadata", "bad arms"])
def test_a_directory_that_does_not_load_is_refused(
    tmp_path: Path, reg: Registry, damage: str
) -> None:
    src = model_variant(tmp_path / "m", "broken-1")
    if damage == "truncated onnx":
        data = (src / "model.onnx").read_bytes()
        (src / "model.onnx").write_bytes(data[: len(data) // 2])
    elif damage == "no metadata":
        (src / "metadata.json").unlink()
    else:
        meta = json.loads((src / "metadata.json").read_text())
        meta["arms"] = meta["arms"][:2]
        (src / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(InvalidRequest, match=r"cannot register .*predictor model at"):
        reg.add(src)
    assert reg.list() == []
    versions = reg.root / "versions"
    assert not versions.exists() or list(versions.iterdir()) == []


def test_unknown_parent_and_unknown_versions(tmp_path: Path, reg: Registry) -> None:
    with pytest.raises(NotFound, match="'nope' is not in the registry"):
        reg.add(model_variant(tmp_path / "m", "child"), parent="nope")
    with pytest.raises(NotFound):
        reg.show("nope")
    with pytest.raises(NotFound):
        reg.promote("nope")
    with pytest.raises(InvalidRequest, match="not a usable model version"):
        reg.path("../escape")


def test_promote_sets_current_and_keeps_history(reg: Registry, three: list[str]) -> None:
    v1, v2, _ = three
    assert reg.promote(v1, "first") is None
    assert reg.current_version() == v1
    assert reg.promote(v2, "better brier") == v1
    assert (reg.root / CURRENT_FILE).read_text() == "v2\n"
    history = reg.history()
    assert [(e.action, e.version, e.previous, e.reason) for e in history] == [
        ("promote", "v1", None, "first"),
        ("promote", "v2", "v1", "better brier"),
    ]
    assert len(reg.show(v2).promoted) == 1
    reg.promote(v1)
    assert len(reg.show(v1).promoted) == 2
    lines = (reg.root / HISTORY_FILE).read_text().splitlines()
    assert len(lines) == 3
    assert all(json.loads(line)["time"] for line in lines)


def test_rollback_walks_back_through_promotions(reg: Registry, three: list[str]) -> None:
    v1, v2, v3 = three
    for v in three:
        reg.promote(v)
    assert reg.rollback("v3 regressed") == v2
    assert reg.current_version() == v2
    assert reg.rollback() == v1
    assert reg.current_version() == v1
    with pytest.raises(InvalidRequest, match="no earlier one"):
        reg.rollback()
    assert reg.current_version() == v1
    # a new promotion starts from where the rollbacks left off
    reg.promote(v3)
    assert reg.rollback() == v1
    events = reg.history()
    assert [e.action for e in events] == [
        "promote",
        "promote",
        "promote",
        "rollback",
        "rollback",
        "promote",
        "rollback",
    ]
    assert events[3].reason == "v3 regressed"
    assert (events[3].version, events[3].previous) == (v2, v3)


def test_rollback_with_nothing_promoted(reg: Registry, three: list[str]) -> None:
    with pytest.raises(InvalidRequest, match="nothing is promoted"):
        reg.rollback()


def test_rollback_from_a_hand_edited_current(reg: Registry, three: list[str]) -> None:
    v1, v2, v3 = three
    reg.promote(v1)
    reg.promote(v2)
    write_atomic(reg.root / CURRENT_FILE, v3 + "\n")
    assert reg.rollback() == v2


def test_a_damaged_copy_is_not_promoted(reg: Registry, three: list[str]) -> None:
    v1, v2, _ = three
    reg.promote(v1)
    onnx = reg.path(v2) / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:1000])
    with pytest.raises(InvalidRequest, match="'v2' cannot be promoted"):
        reg.promote(v2)
    assert reg.current_version() == v1
    assert [e.version for e in reg.history()] == [v1]


def test_load_uses_the_registry_s_thread_count(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "registry", predictor_threads=2)
    version = reg.add(model_variant(tmp_path / "m", "v1"))
    options = reg.load(version)._session.get_session_options()
    assert options.intra_op_num_threads == 2


def test_load_refuses_a_directory_whose_metadata_names_another_version(
    reg: Registry, three: list[str]
) -> None:
    meta_path = reg.path("v2") / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["version"] = "v7"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="says version 'v7'"):
        reg.load("v2")


def test_unreadable_history_lines_are_skipped(reg: Registry, three: list[str]) -> None:
    reg.promote("v1")
    with (reg.root / HISTORY_FILE).open("a") as f:
        f.write('{"action": "promote", "vers')  # a write cut short
    assert [e.version for e in reg.history()] == ["v1"]


def test_write_atomic_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    path = tmp_path / CURRENT_FILE
    a, b = "a" * 200_000, "b" * 200_000
    write_atomic(path, a)
    seen: set[str] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            text = path.read_text()
            seen.add(text[:1] + str(len(text)) + text[-1:])

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(200):
            write_atomic(path, b if i % 2 == 0 else a)
    finally:
        stop.set()
        reader.join()
    assert seen <= {"a200000a", "b200000b"}
    assert [p.name for p in tmp_path.iterdir()] == [CURRENT_FILE]


def test_write_atomic_keeps_the_old_content_when_the_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / CURRENT_FILE
    write_atomic(path, "v1\n")

    def fail(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, "v2\n")
    assert path.read_text() == "v1\n"
    assert [p.name for p in tmp_path.iterdir()] == [CURRENT_FILE]


def test_cli_lists_marks_current_and_promotes(tmp_path: Path, reg: Registry) -> None:
    from router.cli.main import app

    runner = CliRunner()
    env = {"TTC_MODEL_REGISTRY": str(reg.root)}
    src1 = model_variant(tmp_path / "m1", "cli-1")
    src2 = model_variant(tmp_path / "m2", "cli-2")
    r = runner.invoke(app, ["models", "add", str(src1)], env=env)
    assert r.exit_code == 0, r.output
    assert "registered cli-1" in r.output
    r = runner.invoke(app, ["models", "add", str(src2), "--parent", "cli-1"], env=env)
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["models", "promote", "cli-2", "--reason", "try it"], env=env)
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["models", "list"], env=env)
    assert r.exit_code == 0, r.output
    rows = {line.split()[-5]: line for line in r.output.splitlines()[1:]}
    assert rows["cli-2"].startswith("*")
    assert not rows["cli-1"].startswith("*")
    r = runner.invoke(app, ["models", "show", "cli-2"], env=env)
    assert r.exit_code == 0, r.output
    shown = json.loads(r.output)
    assert (shown["parent"], shown["current"]) == ("cli-1", True)
    r = runner.invoke(app, ["models", "rollback"], env=env)
    assert r.exit_code == 2
    assert "no earlier one" in r.output
    r = runner.invoke(app, ["models", "promote", "cli-9"], env=env)
    assert r.exit_code == 2
    assert "'cli-9' is not in the registry" in r.output
    assert reg.current_version() == "cli-2"


# ---- the slot that swaps promoted versions into a running core ----------------------------


class VersionedPredictor(FakePredictor):
    def __init__(self, version: str, table: Mapping[str, ArmPrediction] = PREDICTIONS) -> None:
        super().__init__(table)
        self.version = version


class BrokenPredictor(VersionedPredictor):
    def predict(self, embedding: Any, prompt: str) -> Prediction:
        raise ModelError("predictor model broken failed to run: bad graph")


class FakeSource:
    """A registry in memory: versions map to predictors, or to the error loading raises."""

    def __init__(self, models: Mapping[str, Any], current: str) -> None:
        self.models = dict(models)
        self.current: str | None = current
        self.promoted: list[tuple[str, str]] = []

    def current_version(self) -> str | None:
        return self.current

    def load(self, version: str) -> Any:
        if version not in self.models:
            raise NotFound(f"model version {version!r} is not in the registry")
        found = self.models[version]
        if isinstance(found, Exception):
            raise found
        return found

    def promote(self, version: str, reason: str = "") -> str | None:
        previous, self.current = self.current, version
        self.promoted.append((version, reason))
        return previous


def slot_with(models: Mapping[str, Any]) -> tuple[ModelSlot, FakeSource, RouterCore]:
    core = make_core()
    core.predictor = VersionedPredictor("v1")
    source = FakeSource({"v1": core.predictor, **models}, "v1")
    return ModelSlot(core, source, on_result=count_model_swap), source, core


async def test_poll_swaps_to_a_newly_promoted_version() -> None:
    v2 = VersionedPredictor("v2")
    slot, source, core = slot_with({"v2": v2})
    assert await slot.poll() is False
    source.current = "v2"
    assert await slot.poll() is True
    assert core.predictor is v2
    assert (slot.swaps, slot.refusals) == (1, 0)


async def test_a_swap_starts_the_drift_windows_afresh() -> None:
    """Drift windows measure the model that serves: after a swap they are empty, and a
    refused model leaves them as they were."""
    slot, source, core = slot_with({"v2": VersionedPredictor("v2")})
    core.drift.observe_success("small/greedy", 0.9, 0.0)
    assert [a.arm for a in core.drift.snapshot()] == ["small/greedy"]
    source.current = "missing"
    await slot.poll()
    assert [a.arm for a in core.drift.snapshot()] == ["small/greedy"]
    source.current = "v2"
    assert await slot.poll() is True
    assert core.drift.snapshot() == []


def _nan_table() -> dict[str, ArmPrediction]:
    table = dict(PREDICTIONS)
    table["big/greedy"] = ArmPrediction(float("nan"), 20, 40)
    return table


@pytest.mark.parametrize(
    ("candidate", "why"),
    [
        (VersionedPredictor("v2", {"small/greedy": PREDICTIONS["small/greedy"]}), "big/greedy"),
        (VersionedPredictor("v2", _nan_table()), "not usable"),
        (BrokenPredictor("v2"), "failed a test prediction"),
        (VersionedPredictor("v3"), "reports version 'v3'"),
        (ModelError("predictor model at x: model.onnx is missing"), "model.onnx is missing"),
    ],
)
async def test_poll_refuses_a_model_that_cannot_serve(candidate: Any, why: str) -> None:
    slot, source, _ = slot_with({"v2": candidate})
    before = REGISTRY.get_sample_value("ttc_model_swaps_total", {"result": "refused"}) or 0.0
    source.current = "v2"
    assert await slot.poll() is False
    assert slot.version == "v1"
    assert slot.refusals == 1
    assert slot.last_refusal is not None and why in slot.last_refusal
    after = REGISTRY.get_sample_value("ttc_model_swaps_total", {"result": "refused"})
    assert after == before + 1
    # the same promoted version is not tried again on every poll
    assert await slot.poll() is False
    assert slot.refusals == 1


async def test_reload_checks_then_promotes_then_swaps() -> None:
    slot, source, _ = slot_with(
        {"v2": VersionedPredictor("v2"), "bad": VersionedPredictor("bad", {})}
    )
    result = await slot.reload("v2", reason="by hand")
    assert (result.model_version, result.previous_version) == ("v2", "v1")
    assert source.promoted == [("v2", "by hand")]
    assert slot.version == "v2"
    with pytest.raises(InvalidRequest, match=r"bad cannot be served.*still serving v2"):
        await slot.reload("bad")
    with pytest.raises(NotFound):
        await slot.reload("missing")
    assert source.promoted == [("v2", "by hand")]
    assert slot.version == "v2"
    result = await slot.reload()
    assert (result.model_version, result.previous_version) == ("v2", "v2")
    source.current = "v1"
    result = await slot.reload()
    assert (result.model_version, result.previous_version) == ("v1", "v2")
    source.current = "bad"
    with pytest.raises(ConfigError, match="promoted model bad was refused"):
        await slot.reload()
    assert slot.version == "v1"
