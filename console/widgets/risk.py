"""The one risk colour map of the console: how green, amber and red events look wherever they are shown."""

from __future__ import annotations

from rich.text import Text

#: Rich colour of each level of :data:`db.vocabulary.RISK_LEVELS` (the stylesheet's ``.risk-*`` classes
#: use the theme's colours for the same levels).
RISK_COLORS: dict[str, str] = {"green": "green", "amber": "yellow", "red": "red"}
#: Style of each risk level in tables: red also bold, so it reads without colour.
RISK_STYLES: dict[str, str] = {"green": "green", "amber": "yellow", "red": "bold red"}
#: A glyph per level, fuller as the risk rises, so risk reads without colour (``NO_COLOR``, monochrome).
RISK_GLYPHS: dict[str, str] = {"green": "○", "amber": "◐", "red": "●"}


def risk_text(level: str) -> Text:
    """``level`` as a table cell: its glyph and name in its style (an unknown level unstyled, no glyph)."""
    glyph = RISK_GLYPHS.get(level)
    return Text(f"{glyph} {level}" if glyph else level, style=RISK_STYLES.get(level, ""), end="")
