"""Untrusted text stays text: the one place that makes strings from agents, users and the database safe to show.

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
names need it). Textual is not imported here, so the CLI can use this module.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text

from db.identifiers import escape_forbidden


def visible(value: object) -> str:
    """``value`` as a string whose control, bidi and zero-width characters are written as escapes.

    ``"\\x1b[31mred"`` becomes the nine characters ``\\x1b[31mred``; everything
    else, markup-looking brackets included, is left exactly as it is.
    """
    return escape_forbidden(value if isinstance(value, str) else str(value), joiners_between_letters=True)


def plain(value: object, style: str | Style = "") -> Text:
    """Untrusted ``value`` as text for a widget: never parsed as markup, controls made visible."""
    return Text(visible(value), style=style, end="")
