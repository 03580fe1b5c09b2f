"""Final-answer extraction for voting: the text a sample commits to."""

from __future__ import annotations

import re

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def extract_answer(text: str) -> str:
    """``\\boxed{…}`` if present, else the last number, else the normalised last line."""
    boxed = _BOXED.findall(text)
    if boxed:
        return str(boxed[-1]).strip()
    numbers = _NUMBER.findall(text)
    if numbers:
        value = str(numbers[-1]).replace(",", "")
        if "." in value:
            value = value.rstrip("0").rstrip(".")
        return value
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].lower() if lines else ""
