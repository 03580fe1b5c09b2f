"""A directory of predictor model versions, one of them promoted for serving.

Layout under the registry root::

    versions/<version>/model.onnx        the model as ``classifier.onnx_export`` wrote it
    versions/<version>/metadata.json
    versions/<version>/MODEL_CARD.md     when the source directory had one
    versions/<version>/registry.json     parent, data digest, metrics, created, promoted dates
    CURRENT                              the promoted version (one line)
    history.jsonl                        every promote and rollback: time, versions, reason

``CURRENT`` and every ``registry.json`` are replaced atomically (a temporary file, fsync,
rename), so a server polling ``CURRENT`` never reads half a name. Changes are serialised
between processes with an advisory lock on ``.lock``. A running server that watches the
registry (``TTC_MODEL_REGISTRY``) swaps to a newly promoted version by itself.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from classifier.predictor import METADATA_FILE, MODEL_FILE, OnnxPredictor
from router.errors import InvalidRequest, ModelError, NotFound

log = logging.getLogger("ttc_router.registry")

CURRENT_FILE = "CURRENT"
HISTORY_FILE = "history.jsonl"
ENTRY_FILE = "registry.json"
CARD_FILE = "MODEL_CARD.md"
VERSIONS_DIR = "versions"
_COPIED = (MODEL_FILE, METADATA_FILE, CARD_FILE)
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so readers see the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


@dataclass(frozen=True)
class ModelEntry:
    """One registered version: where it came from, how it scored, when it was promoted."""

    version: str
    created: str
    arms: tuple[str, ...]
    parent: str | None = None
    data_digest: str | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    promoted: tuple[str, ...] = ()
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "created": self.created,
            "arms": list(self.arms),
            "parent": self.parent,
            "data_digest": self.data_digest,
            "metrics": dict(self.metrics),
            "promoted": list(self.promoted),
            "source": self.source,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ModelEntry:
        return cls(
            version=str(doc["version"]),
            created=str(doc.get("created", "")),
            arms=tuple(str(a) for a in doc.get("arms", ())),
            parent=doc.get("parent"),
            data_digest=doc.get("data_digest"),
            metrics=dict(doc.get("metrics") or {}),
            promoted=tuple(str(p) for p in doc.get("promoted", ())),
            source=str(doc.get("source", "")),
        )


@dataclass(frozen=True)
class HistoryEvent:
    """One line of ``history.jsonl``: ``action`` is ``promote`` or ``rollback``."""

    time: str
    action: str
    version: str
    previous: str | None
    reason: str


class Registry:
    """The model versions under ``root`` and the one promoted for serving."""

    def __init__(self, root: Path, *, predictor_threads: int = 1) -> None:
        self.root = Path(root)
        self.predictor_threads = predictor_threads

    # ---- reading --------------------------------------------------------------------
    def current_version(self) -> str | None:
        """The promoted version, or None when nothing was promoted yet."""
        try:
            text = (self.root / CURRENT_FILE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ModelError(
                f"model registry {self.root}: cannot read {CURRENT_FILE}: {exc}"
            ) from None
        return text or None

    def path(self, version: str) -> Path:
        """The directory of a registered version."""
        _check_name(version)
        p = self.root / VERSIONS_DIR / version
        if not (p / ENTRY_FILE).is_file():
            raise NotFound(
                f"model version {version!r} is not in the registry {self.root}; "
                "`ttc-router models list` shows the registered versions"
            )
        return p

    def show(self, version: str) -> ModelEntry:
        """The registry entry of ``version``."""
        return self._read_entry(self.path(version))

    def list(self) -> list[ModelEntry]:
        """Every registered version, oldest first."""
        base = self.root / VERSIONS_DIR
        if not base.is_dir():
            return []
        entries = []
        for d in base.iterdir():
            if d.name.startswith(".") or not (d / ENTRY_FILE).is_file():
                continue
            entries.append(self._read_entry(d))
        return sorted(entries, key=lambda e: (e.created, e.version))

    def history(self) -> builtins.list[HistoryEvent]:
        """Every promote and rollback, oldest first (unreadable lines are skipped)."""
        try:
            lines = (self.root / HISTORY_FILE).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        events = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                events.append(
                    HistoryEvent(
                        time=str(doc["time"]),
                        action=str(doc["action"]),
                        version=str(doc["version"]),
                        previous=doc.get("previous"),
                        reason=str(doc.get("reason", "")),
                    )
                )
            except (json.JSONDecodeError, KeyError, TypeError):
                log.warning("%s line %d is not a history event; skipped", HISTORY_FILE, n)
        return events

    def load(self, version: str) -> OnnxPredictor:
        """Load and validate the predictor of ``version`` (raises ``ModelError`` if broken)."""
        p = self.path(version)
        predictor = OnnxPredictor.load(p, intra_op_threads=self.predictor_threads)
        if predictor.version != version:
            raise ModelError(
                f"model registry {self.root}: directory {version!r} holds a model whose "
                f"metadata says version {predictor.version!r}; register the model again"
            )
        return predictor

    # ---- changing -------------------------------------------------------------------
    def add(
        self,
        model_dir: Path,
        *,
        parent: str | None = None,
        metrics: Mapping[str, Any] | None = None,
        data_digest: str | None = None,
    ) -> str:
        """Copy a model directory in under its metadata version; returns the version.

        The directory must load as a predictor, and its version must not be registered yet.
        """
        model_dir = Path(model_dir)
        try:
            predictor = OnnxPredictor.load(model_dir)
        except ModelError as exc:
            raise InvalidRequest(f"cannot register {model_dir}: {exc.message}") from None
        version = predictor.version
        _check_name(version)
        if parent is not None:
            self.path(parent)
        base = self.root / VERSIONS_DIR
        base.mkdir(parents=True, exist_ok=True)
        staging = base / f".add-{version}-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            for name in _COPIED:
                if (model_dir / name).is_file():
                    shutil.copyfile(model_dir / name, staging / name)
            _check_digest(staging, predictor.metadata)
            entry = ModelEntry(
                version=version,
                created=_now(),
                arms=tuple(predictor.arms),
                parent=parent,
                data_digest=data_digest,
                metrics=dict(metrics or {}),
                source=str(model_dir.resolve()),
            )
            write_atomic(staging / ENTRY_FILE, _dump(entry.to_json()))
            with self._locked():
                final = base / version
                if final.exists():
                    raise InvalidRequest(
                        f"model version {version!r} is already in the registry {self.root}; "
                        "a changed model needs a new version (retrain or re-export it)"
                    )
                os.replace(staging, final)
                _fsync_dir(base)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        log.info("registered model %s from %s", version, model_dir)
        return version

    def promote(self, version: str, reason: str = "") -> str | None:
        """Make ``version`` the served one; returns the version promoted before it.

        The version is loaded first, so a damaged copy is refused here rather than by the
        servers that watch the registry.
        """
        self._check_loads(version)
        with self._locked():
            previous = self.current_version()
            self._set_current(version, "promote", previous, reason)
        log.info("promoted model %s (was %s)", version, previous)
        return previous

    def rollback(self, reason: str = "") -> str:
        """Promote again the version that was promoted before the current one; returns it.

        Repeated rollbacks walk further back through the promotions in ``history.jsonl``.
        """
        with self._locked():
            current = self.current_version()
            if current is None:
                raise InvalidRequest(
                    f"model registry {self.root}: nothing is promoted, so there is nothing "
                    "to roll back"
                )
            stack = self._promotion_stack()
            if not stack or stack[-1] != current:
                stack.append(current)
            while stack and stack[-1] == current:
                stack.pop()
            if not stack:
                raise InvalidRequest(
                    f"model registry {self.root}: {current} is the only version ever "
                    "promoted; there is no earlier one to roll back to"
                )
            target = stack[-1]
            self._check_loads(target)
            self._set_current(target, "rollback", current, reason)
        log.info("rolled back model %s to %s", current, target)
        return target

    # ---- internals ------------------------------------------------------------------
    def _check_loads(self, version: str) -> None:
        try:
            self.load(version)
        except ModelError as exc:
            raise InvalidRequest(
                f"model version {version!r} cannot be promoted: {exc.message}"
            ) from None

    def _set_current(self, version: str, action: str, previous: str | None, reason: str) -> None:
        when = _now()
        d = self.path(version)
        entry = self._read_entry(d)
        promoted = replace(entry, promoted=(*entry.promoted, when))
        write_atomic(d / ENTRY_FILE, _dump(promoted.to_json()))
        write_atomic(self.root / CURRENT_FILE, version + "\n")
        event = {
            "time": when,
            "action": action,
            "version": version,
            "previous": previous,
            "reason": reason,
        }
        with (self.root / HISTORY_FILE).open("a", encoding="utf-8") as f:
            f.write(json.dumps(event, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _promotion_stack(self) -> builtins.list[str]:
        """The versions served one after another, as promotes push and rollbacks pop them."""
        stack: list[str] = []
        for e in self.history():
            if e.action == "rollback" and stack and stack[-1] == e.previous:
                stack.pop()
            if not stack or stack[-1] != e.version:
                stack.append(e.version)
        return stack

    def _read_entry(self, d: Path) -> ModelEntry:
        try:
            doc = json.loads((d / ENTRY_FILE).read_text(encoding="utf-8"))
            return ModelEntry.from_json(doc)
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ModelError(
                f"model registry entry {d / ENTRY_FILE} cannot be read: {exc}"
            ) from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _check_name(version: str) -> None:
    if not _VERSION_RE.match(version):
        raise InvalidRequest(
            f"{version!r} is not a usable model version: use letters, digits and . _ + - "
            "(at most 128 characters, starting with a letter or digit)"
        )


def _check_digest(d: Path, metadata: Mapping[str, Any]) -> None:
    digest = hashlib.sha256((d / MODEL_FILE).read_bytes()).hexdigest()
    if digest != metadata.get("onnx_sha256"):
        raise InvalidRequest(f"the copy of {MODEL_FILE} in {d} differs from the source; retry")


def _dump(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=2) + "\n"


__all__ = ["HistoryEvent", "ModelEntry", "Registry", "write_atomic"]
