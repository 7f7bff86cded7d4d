"""The one table of settings (db/settings.py SETTINGS): the environment, the server's options and the README
agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from db.settings import (
    DEFAULT_DATA_DIR,
    SETTINGS,
    DispatchSettings,
    IngestLimits,
    Number,
    OneLineArgumentParser,
    Setting,
    Settings,
    SettingsError,
    UsageError,
    add_server_options,
    data_dir_of,
    load_settings,
    settings_with_options,
    value_of,
)

README = Path(__file__).resolve().parents[2] / "README.md"
PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
#: Defaults that are folders or URLs: the README describes them in words.
DESCRIBED_IN_WORDS = {"DATABASE_URL", "AIFW_DATA_DIR", "AIFW_EXPORT_DIR"}


def readme_configuration_rows() -> dict[str, str]:
    """Each variable of the README's configuration table → its default as written there."""
    text = README.read_text()
    section = text[text.index("| variable | default |") :]
    rows: dict[str, str] = {}
    for line in section.splitlines()[2:]:
        if not line.startswith("|"):
            break
        names_cell, defaults_cell = line.split("|")[1:3]
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", names_cell)
        defaults = [part.strip() for part in defaults_cell.split(" / ")]
        for index, name in enumerate(names):
            rows[name] = defaults[index] if len(defaults) == len(names) else defaults_cell.strip()
    return rows


def written(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


def parser_for(settings: Settings) -> OneLineArgumentParser:
    parser = OneLineArgumentParser(prog="tool")
    add_server_options(parser, settings)
    return parser


def test_the_readme_lists_every_setting_of_the_table_and_nothing_else() -> None:
    assert set(readme_configuration_rows()) == {setting.env for setting in SETTINGS}


@pytest.mark.parametrize(
    "setting", [s for s in SETTINGS if s.env not in DESCRIBED_IN_WORDS], ids=lambda s: s.env
)
def test_the_readme_gives_each_settings_default(setting: Setting) -> None:
    row = readme_configuration_rows()[setting.env]
    assert row.startswith(written(setting.in_variable_unit(setting.default))), row


def test_the_defaults_of_the_table_are_what_load_settings_gives() -> None:
    settings = load_settings({})
    assert settings.ingest == IngestLimits()
    assert settings.dispatch == DispatchSettings()
    for setting in SETTINGS:
        if setting.env not in DESCRIBED_IN_WORDS:
            assert value_of(settings, setting.attribute) == setting.default, setting.env


def test_an_option_not_given_keeps_what_the_environment_set() -> None:
    settings = load_settings({"INGEST_SHUTDOWN_GRACE_SECONDS": "42", "INGEST_MAX_IN_FLIGHT": "7"})
    args = parser_for(settings).parse_args(["--max-in-flight", "9"])
    applied = settings_with_options(settings, args)
    assert applied.ingest.shutdown_grace_seconds == 42
    assert applied.ingest.max_in_flight_per_connection == 9
    assert applied.ingest_port == settings.ingest_port


@pytest.mark.parametrize(
    "setting", [s for s in SETTINGS if s.flag and isinstance(s.parse, Number)], ids=lambda s: s.env
)
def test_the_environment_and_the_option_share_their_bounds(setting: Setting) -> None:
    parse = setting.parse
    assert isinstance(parse, Number)
    too_small = str(parse.minimum - 1 if not parse.exclusive_minimum else parse.minimum)
    with pytest.raises(SettingsError, match=re.escape(f"{setting.env} must be {parse.bounds}")):
        load_settings({setting.env: too_small})
    with pytest.raises(UsageError, match=re.escape(f"argument {setting.flag}")) as refused:
        parser_for(load_settings({})).parse_args([setting.flag, too_small])
    assert f"must be {parse.bounds}" in str(refused.value)


def test_the_shutdown_grace_option_is_capped_like_its_variable() -> None:
    with pytest.raises(UsageError, match="at most 300"):
        parser_for(load_settings({})).parse_args(["--shutdown-grace", "301"])


def test_tls_needs_both_files_whichever_way_they_are_given() -> None:
    settings = load_settings({"INGEST_TLS_CERT": "/etc/cert.pem", "INGEST_TLS_KEY": "/etc/key.pem"})
    args = parser_for(settings).parse_args(["--tls-key", "/etc/other.pem"])
    assert settings_with_options(settings, args).ingest_tls_key == "/etc/other.pem"
    with pytest.raises(SettingsError, match="TLS needs both"):
        load_settings({"INGEST_TLS_CERT": "/etc/cert.pem"})
    bare = load_settings({})
    with pytest.raises(SettingsError, match="TLS needs both"):
        settings_with_options(bare, parser_for(bare).parse_args(["--tls-cert", "/etc/cert.pem"]))


def test_the_protocol_pages_options_are_the_tables() -> None:
    text = PROTOCOL.read_text()
    section = text[text.index("| variable | option | default |") :]
    documented: dict[str, str] = {}
    for line in section.splitlines()[2:]:
        if not line.startswith("|"):
            break
        names_cell, options_cell = line.split("|")[1:3]
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", names_cell)
        options = re.findall(r"`(--[a-z-]+)`", options_cell)
        if options_cell.strip() == "—":
            documented.update(dict.fromkeys(names))
            continue
        assert len(names) == len(options), line
        documented.update(zip(names, options, strict=True))
    by_variable = {setting.env: setting.flag for setting in SETTINGS}
    assert {name: by_variable.get(name, "not a setting") for name in documented} == documented
    assert {name for name, flag in by_variable.items() if flag} <= set(documented)


@pytest.mark.parametrize("raw", [None, "", "   ", "~/aifw-data", "/srv/aifw"])
def test_the_data_folder_reads_alike_before_and_with_the_settings(raw: str | None, tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"}
    if raw is not None:
        env["AIFW_DATA_DIR"] = raw
    assert data_dir_of(env) == load_settings(env).data_dir
    assert (data_dir_of(env) == DEFAULT_DATA_DIR) == (raw is None or not raw.strip())


def test_the_dispatch_settings_reach_their_group() -> None:
    settings = load_settings(
        {
            "INGEST_DISPATCH": "off",
            "DISPATCH_POLL_MS": "50",
            "FORWARD_POLL_MS": "2000",
            "DISPATCH_LEASE_SECONDS": "4",
            "FORWARD_HOLD_DAYS": "0",
        }
    )
    assert settings.dispatch == DispatchSettings(
        run_in_ingest_server=False,
        poll_seconds=0.05,
        forward_poll_seconds=2.0,
        lease_seconds=4,
        forward_hold_days=0,
    )
    assert settings.ingest == IngestLimits()


@pytest.mark.parametrize(
    ("variable", "raw", "message"),
    [
        ("DISPATCH_LEASE_SECONDS", "1", "DISPATCH_LEASE_SECONDS must be at least 2 and at most 300"),
        ("DISPATCH_POLL_MS", "0", "DISPATCH_POLL_MS must be at least 1 and at most 10000"),
        ("FORWARD_POLL_MS", "60001", "FORWARD_POLL_MS must be at least 1 and at most 60000"),
        ("FORWARD_HOLD_DAYS", "366", "FORWARD_HOLD_DAYS must be at least 0 and at most 365"),
        ("INGEST_DISPATCH", "maybe", "INGEST_DISPATCH must be true or false"),
    ],
)
def test_a_dispatch_setting_out_of_bounds_is_one_line_naming_it(
    variable: str, raw: str, message: str
) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        load_settings({variable: raw})


def test_the_dispatchers_options_take_milliseconds_and_never_show_the_secret_key() -> None:
    key = "c2VjcmV0LWtleS1ub2JvZHktc2hvdWxkLWV2ZXItc2VlLTAxMjM0NTY3ODk="
    settings = load_settings({"AIFW_SECRET_KEY": key, "DISPATCH_POLL_MS": "40"})
    parser = OneLineArgumentParser(prog="aifw-dispatch")
    add_server_options(parser, settings, program="dispatch")
    assert key not in parser.format_help()
    assert "now 40" in parser.format_help()
    arguments = parser.parse_args(["--poll-ms", "100", "--forward-poll-ms", "300"])
    applied = settings_with_options(settings, arguments, program="dispatch")
    assert (applied.dispatch.poll_seconds, applied.dispatch.forward_poll_seconds) == (0.1, 0.3)
    assert key not in repr(applied)
