"""Cutting long messages (an exporter's error, a failed check's text) to their head."""
from __future__ import annotations


def first_lines(text: object, count: int) -> str:
    """The first `count` non-blank lines of a message (or an exception's text)."""
    return "\n".join([line for line in str(text).splitlines() if line.strip()][:count])


def first_line(text: object) -> str:
    """The first non-blank line, stripped; "" for an empty message."""
    return first_lines(text, 1).strip()
