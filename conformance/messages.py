"""Cutting long messages (an exporter's error, a failed check's text) to their head."""
from __future__ import annotations


def first_lines(text: object, count: int) -> str:
    """The first `count` non-blank lines of a message (or an exception's text)."""
    return "\n".join([line for line in str(text).splitlines() if line.strip()][:count])


def first_line(text: object) -> str:
    """The first non-blank line, stripped; "" for an empty message."""
    return first_lines(text, 1).strip()


def head_and_cause(text: object, count: int) -> str:
    """At most `count` non-blank lines, keeping the last one: an interpreter's error (a
    TorchScript traceback, a chained exception) states its cause last, after a stack
    of frames that the head alone would keep instead."""
    lines = [line for line in str(text).splitlines() if line.strip()]
    if len(lines) <= count:
        return "\n".join(lines)
    kept = lines[:max(count - 2, 1)]
    return "\n".join([*kept, f"[... {len(lines) - len(kept) - 1} more lines ...]", lines[-1]])
