"""A detail as labelled lines ("State        open"), one field a line, the labels padded so the values line
up: the alert and destination details use it. Values from agents or the database arrive as plain Text."""

from __future__ import annotations

from rich.text import Text

#: The width of the labels (the longest, "Unsent since", and a space).
LABEL_WIDTH = 13


def add_line(text: Text, label: str, value: Text | str) -> None:
    """Append ``label`` (bold, padded) and ``value`` to ``text`` as one more line."""
    if text.plain:
        text.append("\n")
    text.append(label.ljust(LABEL_WIDTH), style="bold")
    text.append_text(value if isinstance(value, Text) else Text(value))
