"""Final-answer extractors: the part of a sample's text that votes.

Sampling strategies compare samples by the answer they commit to, not by their whole text.
An extractor is picked by name (the ``extractor`` option of ``vote``, ``short``, ``escalate``):

``auto``        ``\\boxed{…}`` if present, else the last number, else the last line (lower-cased)
``last_number`` the last number, with thousands separators and trailing decimal zeros removed
``boxed``       the contents of the last ``\\boxed{…}`` (nested braces allowed)
``choice``      a multiple-choice letter A–J: "Answer: (C)", "the answer is C", a last line "C."
``code``        the contents of the last fenced code block, dedented, blank lines dropped
``exact``       the whole text, stripped, case-folded, runs of whitespace collapsed
``json:<path>`` a field of the last JSON object in the text that has it; ``<path>`` is dotted
                (``result.answer``, ``choices.0``)

An extractor returns None when the text holds no answer of its kind; such a sample does not
vote.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable
from typing import Any

from router.errors import InvalidRequest

Extractor = Callable[[str], str | None]

_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_BOXED = re.compile(r"\\boxed\s*\{")
_WS = re.compile(r"\s+")
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[^\n`]*$", re.MULTILINE)

# The stated answer: "answer is (C)", "Answer: C", "answer: **C**", "final answer is option C".
# A bare letter must be a capital; a bracketed one may be lower-case.
_CHOICE_STATED = re.compile(
    r"(?i:answer)\s*(?:(?i:is)\s*)?[:\-=]?\s*(?:(?i:option|choice)\s*)?[\*_]*"
    r"(?:\(([A-Ja-j])\)|\[([A-Ja-j])\]|([A-J]))(?![A-Za-z0-9])"
)
# A last line that is only a letter: "C", "(C)", "C.", "**C**", "Option C"
_CHOICE_LINE = re.compile(
    r"^[\W_]*(?:(?i:option|choice)\s*)?(?:\(([A-Ja-j])\)|\[([A-Ja-j])\]|([A-J]))[\W_]*$"
)
# A last line that starts with a bracketed letter: "(C) 42"
_CHOICE_LEAD = re.compile(r"^[\W_]*?(?:\(([A-Ja-j])\)|\[([A-Ja-j])\])")


def _normalise_number(raw: str) -> str:
    value = raw.replace(",", "")
    if "." in value:
        value = value.rstrip("0").rstrip(".")
    if value in ("-0", ""):
        value = "0"
    return value


def last_number(text: str) -> str | None:
    """The last number in ``text`` ("1,234.50" → "1234.5"), or None."""
    numbers = _NUMBER.findall(text)
    return _normalise_number(str(numbers[-1])) if numbers else None


def _braced(text: str, start: int) -> str | None:
    """The text inside the braces opening at ``text[start - 1]``, or None if unbalanced."""
    depth = 1
    for pos in range(start, len(text)):
        ch = text[pos]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start:pos]
    return None


def boxed(text: str) -> str | None:
    """The contents of the last complete ``\\boxed{…}``, whitespace collapsed, or None."""
    found: str | None = None
    for m in _BOXED.finditer(text):
        inner = _braced(text, m.end())
        if inner is not None:
            found = inner
    if found is None:
        return None
    value = _WS.sub(" ", found).strip()
    return value or None


def auto(text: str) -> str | None:
    """``\\boxed{…}`` if present, else the last number, else the normalised last line."""
    value = boxed(text)
    if value is not None:
        return value
    value = last_number(text)
    if value is not None:
        return value
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].lower() if lines else None


def extract_answer(text: str) -> str:
    """The ``auto`` answer of ``text``, or "" when it has none."""
    return auto(text) or ""


def _letter(m: re.Match[str]) -> str:
    return next(g for g in m.groups() if g).upper()


def choice(text: str) -> str | None:
    """A multiple-choice letter A–J, upper-cased, or None.

    Looks for, in order: the last stated answer ("the answer is (C)", "Answer: C"), a
    ``\\boxed{C}``, a last line that is only a letter ("C.", "(C)", "**C**"), a last line
    that starts with a parenthesised letter ("(C) 42").
    """
    stated = list(_CHOICE_STATED.finditer(text))
    if stated:
        return _letter(stated[-1])
    value = boxed(text)
    if value is not None:
        inner = re.sub(r"\\text\s*\{([^{}]*)\}", r"\1", value).strip(" ()")
        if len(inner) == 1 and inner.upper() in "ABCDEFGHIJ":
            return inner.upper()
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    last = lines[-1]
    for pattern in (_CHOICE_LINE, _CHOICE_LEAD):
        m = pattern.match(last)
        if m:
            return _letter(m)
    return None


def code(text: str) -> str | None:
    """The last fenced code block (``` or ~~~), dedented, trailing spaces and blank lines
    dropped; a block left open at the end of the text counts. None without a block."""
    fences = list(_FENCE.finditer(text))
    blocks: list[str] = []
    pos = 0
    while pos < len(fences):
        opening = fences[pos]
        marker = opening.group(1)
        close = next(
            (
                j
                for j in range(pos + 1, len(fences))
                if fences[j].group(1)[0] == marker[0]
                and len(fences[j].group(1)) >= len(marker)
                and fences[j].group(0).strip() == fences[j].group(1)
            ),
            None,
        )
        body_start = opening.end() + 1
        if close is None:
            blocks.append(text[body_start:])
            break
        blocks.append(text[body_start : fences[close].start()])
        pos = close + 1
    if not blocks:
        return None
    body = textwrap.dedent(blocks[-1])
    lines = [ln.rstrip() for ln in body.splitlines() if ln.strip()]
    return "\n".join(lines) or None


def exact(text: str) -> str | None:
    """The whole text, stripped, case-folded, whitespace runs collapsed; None if empty."""
    value = _WS.sub(" ", text).strip().casefold()
    return value or None


def _json_objects(text: str) -> list[dict[str, Any]]:
    """Top-level JSON objects in ``text``, in order (each ``{`` tried as a start)."""
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    pos = text.find("{")
    while pos != -1:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            pos = text.find("{", pos + 1)
            continue
        if isinstance(obj, dict):
            found.append(obj)
        pos = text.find("{", end)
    return found


_MISSING = object()


def _lookup(obj: Any, path: list[str]) -> Any:
    for part in path:
        if isinstance(obj, dict) and part in obj:
            obj = obj[part]
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return _MISSING
    return obj


def _json_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        text = _WS.sub(" ", value).strip()
        return text or None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def json_field(path: str) -> Extractor:
    """An extractor for the dotted ``path`` of the last JSON object in the text that has it.

    Strings are whitespace-collapsed, numbers written canonically (``42.0`` → ``42``),
    booleans as ``true``/``false``, objects and lists as compact sorted JSON; a null or
    missing field is no answer.
    """
    parts = path.split(".")
    if not path or any(not p for p in parts):
        raise InvalidRequest(
            f"extractor 'json:{path}' needs a field path such as 'json:answer' or 'json:a.b'"
        )

    def extract(text: str) -> str | None:
        for obj in reversed(_json_objects(text)):
            value = _lookup(obj, parts)
            if value is not _MISSING:
                return _json_value(value)
        return None

    return extract


_NAMED: dict[str, Extractor] = {
    "auto": auto,
    "boxed": boxed,
    "choice": choice,
    "code": code,
    "exact": exact,
    "last_number": last_number,
}


def known_extractors() -> list[str]:
    return [*sorted(_NAMED), "json:<field>"]


def get_extractor(name: str) -> Extractor:
    """The extractor called ``name``; InvalidRequest naming the known ones otherwise."""
    if name.startswith("json:"):
        return json_field(name[len("json:") :])
    try:
        return _NAMED[name]
    except KeyError:
        raise InvalidRequest(
            f"unknown extractor {name!r}; known extractors: {', '.join(known_extractors())}"
        ) from None
