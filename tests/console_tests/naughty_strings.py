"""Hostile strings for the console's untrusted-text tests: markup, format strings, scripts, RTL, emoji.

Most come from the Big List of Naughty Strings (github.com/minimaxir/big-list-of-naughty-strings),
the rest are Textual and Rich markup that ``escape()`` used to let through. :data:`IDENTIFIERS`
are those an agent could send as a tool name, user id or device id (the database refuses control,
bidi and zero-width characters there, :data:`db.identifiers.FORBIDDEN`); :data:`WITH_CONTROLS` go
into fields that accept anything (names, token names, metadata values, audit details).
"""

from __future__ import annotations

from db.identifiers import FORBIDDEN

NAUGHTY: tuple[str, ...] = (
    # Textual / Rich markup
    "[/]EvilTool",
    "[/]",
    "[b]bold[/b]",
    "[B]x",
    "[$accent]x",
    "[link=https://evil.example]click[/link]",
    "[@click=app.quit]q[/]",
    "\\[x",
    "[red]unclosed",
    "[/red]",
    "[bold red on white]x[/]",
    "[[x]]",
    "[",
    "]",
    "[on $panel]x",
    "[i]x[/i][/i]",
    "[dim]none yet[/dim]",
    # format strings and templates
    "%s%s%s%n",
    "{0}{1}",
    "${7*7}",
    "{{x}}",
    # scripts, SQL, shells, paths
    "<script>alert(1)</script>",
    "'; DROP TABLE log_entries; --",
    "1' OR '1'='1",
    "../../../etc/passwd",
    "$(reboot)",
    "`id`",
    # spreadsheet formulas
    '=HYPERLINK("http://evil.example","x")',
    "+cmd|' /C calc'!A0",
    "@SUM(1+1)",
    # Unicode
    "😀👍🏽",
    "👨‍👩‍👧",  # zero-width joiners: refused in identifiers
    "Ω≈ç√∫",
    "田中さんにあげて下さい",
    "مرحبا بالعالم",
    "שלום עולם",
    "Z̮̞̠͙͔ͅḀ̗̞͈̻̗Ḷ͙͎̯̹̞͓G̻O̭̗̮",
    "\u202eevil",  # right-to-left override: refused in identifiers
    # words that mean something elsewhere
    "null",
    "None",
    "undefined",
    "NaN",
    "-1",
    # backslashes
    "\\",
    "\\x1b[31m",
    "C:\\Users\\[x]",
)

#: Strings an agent may use as an identifier (the database refuses the others).
IDENTIFIERS: tuple[str, ...] = tuple(value for value in NAUGHTY if not FORBIDDEN.search(value))

#: Strings with ANSI escapes and other control characters, for fields the database accepts them in.
WITH_CONTROLS: tuple[str, ...] = (
    "\x1b[31mred\x1b[0m",
    "\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\",
    "bell\x07",
    "\x9b31mcsi",
    "rtl\u202eoverride",
    "two\nlines",
    "tab\tstop",
    "del\x7f",
)
