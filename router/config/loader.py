"""Load policy files (backends.yaml, tenants.yaml) strictly, with file and line in every error."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from router.config.backends import BackendsConfig
from router.config.tenants import TenantsConfig
from router.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> tuple[int | None, bool]:
    """The 1-based line of the YAML node at ``loc``; the bool says whether loc names a key."""
    current = node
    line = current.start_mark.line + 1 if current is not None else None
    for part in loc:
        if isinstance(current, yaml.MappingNode):
            found = None
            for key_node, value_node in current.value:
                if key_node.value == str(part):
                    found = (key_node, value_node)
                    break
            if found is None:
                return line, False
            line = found[0].start_mark.line + 1
            current = found[1]
        elif isinstance(current, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(current.value):
                return line, False
            current = current.value[part]
            line = current.start_mark.line + 1
        else:
            return line, False
    return line, True


def _describe(path: Path, root: yaml.Node | None, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        line, _ = _line_of(root, loc)
        where = f"{path}:{line}" if line is not None else str(path)
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            msg = f"unknown key {str(loc[-1])!r} at {dotted}"
        elif e["type"] == "missing":
            msg = f"missing required key {dotted}"
        else:
            msg = f"{dotted}: {e['msg']}"
        lines.append(f"{where}: {msg}")
    return "\n".join(lines)


def load_model(path: Path, model: type[M]) -> M:
    """Parse ``path`` as YAML and validate it against ``model``; raise ConfigError on any fault."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from exc
    if data is None:
        raise ConfigError(f"{path}: the file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the top level must be a mapping")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(path, root, exc)) from exc


def load_backends(path: Path) -> BackendsConfig:
    return load_model(path, BackendsConfig)


def load_tenants(path: Path) -> TenantsConfig:
    return load_model(path, TenantsConfig)


def check_file(path: Path) -> str:
    """Validate a policy file, recognising its kind by its top-level key. Returns a summary."""
    try:
        head = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        head = None
    if isinstance(head, dict) and "tenants" in head:
        t = load_tenants(path)
        return f"{path}: ok, {len(t.tenants)} tenant(s)"
    if isinstance(head, dict) and ("tiers" in head or "arms" in head):
        b = load_backends(path)
        return f"{path}: ok, {len(b.tiers)} tier(s), {len(b.arms)} arm(s)"
    if head is None:
        # Re-run the strict loader to get its file/line message.
        load_model(path, BackendsConfig)
    raise ConfigError(
        f"{path}:1: cannot tell what this file configures: expected a top-level 'tenants' "
        "(tenants.yaml) or 'tiers' and 'arms' (backends.yaml)"
    )
