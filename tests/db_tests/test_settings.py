"""Settings: defaults, the guide's URL format, and one-line errors naming the variable."""

from __future__ import annotations

import pytest

from db.settings import DEFAULT_DATA_DIR, SettingsError, load_settings


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
    settings = load_settings({"DATABASE_URL": "postgresql+asyncpg://user:password@localhost:5432/ai_firewall"})
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
