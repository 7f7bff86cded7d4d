"""The console's checkbox: ``[✓]`` when ticked and ``[ ]`` when not, so the two states differ in shape,
not only in colour (Textual's own shows ``▐X▌`` either way, and under ``NO_COLOR`` both look the same)."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Checkbox

TICKED = "✓"


class TickBox(Checkbox):
    """A :class:`~textual.widgets.Checkbox` whose box reads ticked or not without colour."""

    @property
    def _button(self) -> Content:
        style = self.get_visual_style("toggle--button")
        return Content.assemble("[", (TICKED if self.value else " ", style), "]")
