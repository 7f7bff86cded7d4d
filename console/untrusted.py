"""Untrusted text stays text: the one place that makes strings from agents, users and the database safe to
show.

Since Textual 2 any ``[`` may open a markup tag, and ``textual.markup.escape``
leaves ``[B]x`` or ``[$accent]x`` to be parsed, so nothing untrusted is ever
written into markup. It reaches a widget as the :class:`rich.text.Text` that
:func:`plain` builds (never parsed), styled pieces are joined with
``Text.assemble``, and notifications are always plain (the app's ``notify``).

Characters that act on a terminal or change how text reads — C0 and C1
controls (an ANSI escape starts with ESC or CSI), DEL, bidirectional overrides
and isolates, zero-width characters: the list of :mod:`db.identifiers` — are
shown as visible escapes (``\\x1b``, ``\\u202e``) by :func:`visible`, which the
command-line tools use before printing too. A zero-width joiner or non-joiner
between two letters stays, as the database allows it there (Persian and Indic
names need it). The command-line tools use :func:`db.identifiers.visible` alone.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text

from db.identifiers import visible


def plain(value: object, style: str | Style = "") -> Text:
    """Untrusted ``value`` as text for a widget: never parsed as markup, controls made visible."""
    return Text(visible(value), style=style, end="")
