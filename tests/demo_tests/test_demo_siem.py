"""``python -m console demo`` shows alerts and forwarding: its ingest server runs the dispatcher, the
simulated fleet's red burst raises the default "Red burst per user" alert within seconds, and the demo's
SIEM receiver writes what the demo organisations forward (alerts and red events) to ``siem.log``."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from sqlalchemy import select

from db.engine import new_engine, new_sessionmaker
from db.models import Alert, ForwardDestination
from simulation.demo import DEMO_DESTINATION, DEMO_ORGANIZATIONS, SIEM_FILE
from tests.demo_tests.test_demo import children_printed, demo_env, is_running, processes_mentioning, run_demo
from tests.support.database import settings_for


async def alerts_and_destinations(url: str) -> tuple[list[Alert], list[ForwardDestination]]:
    engine = new_engine(settings_for(url))
    try:
        async with new_sessionmaker(engine)() as session:
            alerts = list((await session.scalars(select(Alert))).all())
            destinations = list((await session.scalars(select(ForwardDestination))).all())
            return alerts, destinations
    finally:
        await engine.dispose()


def test_the_demo_raises_the_red_burst_alert_and_forwards_it_to_its_siem(tmp_path: Path) -> None:
    result = run_demo(demo_env(tmp_path), "--duration", "20", "--backfill-days", "0", "--devices", "6")
    assert result.returncode == 0, result.stdout + result.stderr
    receiver = re.search(r"SIEM receiver pid (\d+)", result.stdout)
    assert receiver is not None, result.stdout
    assert not is_running(int(receiver.group(1)))
    assert not is_running(children_printed(result.stdout).server_pid)
    assert processes_mentioning(str(tmp_path)) == []

    url = f"sqlite+aiosqlite:///{tmp_path}/demo/firewall.db"
    alerts, destinations = asyncio.run(alerts_and_destinations(url))
    assert "Red burst per user" in {alert.rule_name for alert in alerts}
    assert {(d.organization_id, d.name) for d in destinations} == {
        (name, DEMO_DESTINATION) for name, _ in DEMO_ORGANIZATIONS
    }

    lines = (tmp_path / "demo" / SIEM_FILE).read_text(encoding="utf-8").splitlines()
    bodies = [json.loads(line[line.index("] ") + 2 :]) for line in lines]
    assert {"Red burst per user"} <= {body.get("rule_name") for body in bodies if body["type"] == "alert"}
    events = [body for body in bodies if body["type"] == "event"]
    assert events
    assert {event["risk_level"] for event in events} == {"red"}
