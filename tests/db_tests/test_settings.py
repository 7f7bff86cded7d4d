"""Settings: defaults, the guide's URL format, and one-line errors naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from db.settings import (
    DEFAULT_DATA_DIR,
    OneLineArgumentParser,
    SettingsError,
    UsageError,
    load_settings,
    port_number,
    sqlite_file,
)


def test_no_database_url_means_the_embedded_sqlite_file() -> None:
    settings = load_settings({})
    assert settings.is_sqlite
    assert settings.database_url_is_default
    assert settings.url.database == str(DEFAULT_DATA_DIR / "firewall.db")


def test_defaults_match_the_guide() -> None:
    settings = load_settings({})
    assert settings.enable_retention_scheduler is False
    assert settings.retention_cleanup_interval_hours == 24.0
    assert settings.ingest.max_line_bytes == 64 * 1024


def test_guides_postgresql_url_format_is_accepted() -> None:
    settings = load_settings(
        {"DATABASE_URL": "postgresql+asyncpg://user:password@localhost:5432/ai_firewall"}
    )
    assert settings.is_postgresql
    assert settings.url.password == "password"
    assert settings.url.database == "ai_firewall"


def test_plain_postgresql_scheme_uses_asyncpg() -> None:
    settings = load_settings({"DATABASE_URL": "postgresql://postgres@localhost/ai_firewall"})
    assert settings.url.drivername == "postgresql+asyncpg"


def test_decimal_interval_is_allowed() -> None:
    assert load_settings({"RETENTION_CLEANUP_INTERVAL_HOURS": "0.5"}).retention_cleanup_interval_hours == 0.5


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", "mysql://root@localhost/x"),
        ("DATABASE_URL", "not a url at all"),
        ("RETENTION_CLEANUP_INTERVAL_HOURS", "abc"),
        ("RETENTION_CLEANUP_INTERVAL_HOURS", "-1"),
        ("RETENTION_CLEANUP_INTERVAL_HOURS", "0"),
        ("RETENTION_CLEANUP_INTERVAL_HOURS", "nan"),
        ("ENABLE_RETENTION_SCHEDULER", "maybe"),
        ("INGEST_PORT", "70000"),
        ("INGEST_MAX_LINE_BYTES", "12kb"),
    ],
)
def test_bad_value_is_a_one_line_error_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings({variable: value})
    message = str(error.value)
    assert variable in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite:///:memory:",
        "sqlite+aiosqlite://",
        "sqlite:///:memory:",
        "sqlite+aiosqlite:///file::memory:?uri=true",
        "sqlite+aiosqlite:///file:shared?mode=memory&cache=shared&uri=true",
    ],
)
def test_an_in_memory_sqlite_database_is_refused_saying_to_use_a_file(url: str) -> None:
    with pytest.raises(SettingsError, match="in-memory SQLite database, which would vanish.*use a file"):
        load_settings({"DATABASE_URL": url})


def test_a_sqlite_file_in_a_missing_folder_is_refused_and_no_folder_is_made(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "data"
    with pytest.raises(SettingsError, match=f"folder {missing}, which does not exist"):
        load_settings({"DATABASE_URL": f"sqlite+aiosqlite:///{missing / 'firewall.db'}"})
    assert not (tmp_path / "typo").exists()


def test_a_read_only_sqlite_uri_names_its_file(tmp_path: Path) -> None:
    settings = load_settings(
        {"DATABASE_URL": f"sqlite+aiosqlite:///file:{tmp_path / 'x.db'}?mode=ro&uri=true"}
    )
    assert sqlite_file(settings.url) == tmp_path / "x.db"


def test_the_embedded_default_creates_its_data_folder(tmp_path: Path) -> None:
    load_settings({"AIFW_DATA_DIR": str(tmp_path / "new" / "data")})
    assert (tmp_path / "new" / "data").is_dir()


def test_a_data_folder_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").touch()
    with pytest.raises(SettingsError, match="AIFW_DATA_DIR: cannot create the data folder") as error:
        load_settings({"AIFW_DATA_DIR": str(tmp_path / "a-file" / "data")})
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("port", ["http", "7878.5", "-1", "65536", "1e3"])
def test_ingest_port_must_be_a_port_number(port: str) -> None:
    with pytest.raises(
        SettingsError, match=f"INGEST_PORT must be a port number from 0 to 65535; got '{port}'"
    ):
        load_settings({"INGEST_PORT": port})


@pytest.mark.parametrize("port", ["0", "1", "65535", " 7000 "])
def test_ingest_port_accepts_0_to_65535(port: str) -> None:
    assert load_settings({"INGEST_PORT": port}).ingest_port == int(port)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("postgresql+asyncpg://u:hunter2@db:99999/x", "has port 99999, not one from 1 to 65535"),
        ("postgresql+asyncpg://u:hunter2@db:pg/x", "has a port that is not a number"),
    ],
)
def test_a_database_port_out_of_range_is_refused_without_echoing_the_password(url: str, words: str) -> None:
    with pytest.raises(SettingsError, match=words) as error:
        load_settings({"DATABASE_URL": url})
    assert "hunter2" not in str(error.value)


def test_a_bad_argument_is_a_one_line_usage_error() -> None:
    parser = OneLineArgumentParser(prog="tool")
    parser.add_argument("--port", type=port_number)
    with pytest.raises(UsageError) as error:
        parser.parse_args(["--port", "99999"])
    assert (
        str(error.value)
        == "argument --port: must be a port number from 0 to 65535; got '99999' (see tool --help)"
    )
