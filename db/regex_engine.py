"""The one regex engine custom patterns use: RE2, whose matching time grows linearly with the text.

Custom patterns are pushed to every agent of an organisation and run there on
what people type, so a pattern must be safe anywhere: no backtracking blow-up
like Python's ``re`` on ``(a+)+$``. RE2 guarantees that by refusing what it
cannot run in linear time (back-references, look-around); the same engine checks
a pattern when it is saved and runs it in the console's tester, so what the
tester shows is what the agents will do.
"""

from __future__ import annotations

from typing import Any

import re2


class PatternSyntaxError(ValueError):
    """RE2 refuses a pattern; the message is RE2's reason ("invalid perl operator: (?=")."""


def _options() -> Any:
    options = re2.Options()
    # RE2 otherwise writes every refusal to standard error, straight across the console's screen.
    options.log_errors = False
    return options


_OPTIONS = _options()


def compile_pattern(regex: str) -> Any:
    """``regex`` compiled by RE2 (``search``, ``finditer`` as in ``re``); PatternSyntaxError with RE2's
    reason."""
    try:
        return re2.compile(regex, _OPTIONS)
    except re2.error as error:
        reason = error.args[0] if error.args else "refused by RE2"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise PatternSyntaxError(str(reason)) from None
