"""The banner the demo prints before the console opens: what the database holds, not the demo's defaults."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from db.configs import update_config
from db.engine import new_sessionmaker
from db.rights import Actor
from db.settings import Settings
from simulation.demo import (
    DEMO_ORGANIZATIONS,
    DemoDatabase,
    TrafficPlan,
    _prepare,
    describe_setup,
    generate_password,
)


def orgs_line(lines: list[str]) -> str:
    (line,) = [line for line in lines if line.startswith("  orgs")]
    return line


async def test_the_banner_shows_the_retention_an_operator_set_since_the_last_run(
    engine: AsyncEngine, settings: Settings, tmp_path: Path
) -> None:
    database = DemoDatabase(settings, tmp_path / "demo", embedded=False)
    password = generate_password()
    first = describe_setup(database, await _prepare(settings, password), TrafficPlan())
    assert orgs_line(first) == "  orgs      " + ", ".join(
        f"{name} ({days} days)" for name, days in DEMO_ORGANIZATIONS
    )
    (name, days), *_ = DEMO_ORGANIZATIONS
    assert days != 45
    async with new_sessionmaker(engine)() as session:
        await update_config(session=session, organization_id=name, actor=Actor.cli(), log_retention_days=45)
        await session.commit()

    again = describe_setup(database, await _prepare(settings, password), TrafficPlan())

    assert f"{name} (45 days)" in orgs_line(again)
    assert f"{name} ({days} days)" not in orgs_line(again)
