"""The Config section (:mod:`console.sections.config.section`) and its tabs, one module each."""

from console.sections.config.section import ConfigSection

__all__ = ["ConfigSection"]
