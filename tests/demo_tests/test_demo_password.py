"""The administrator password the demo generates passes the password policy of db/security.py."""

from __future__ import annotations

from db.security import validate_password
from simulation.demo import generate_password


def test_the_demo_generates_passwords_the_rules_accept() -> None:
    for _ in range(200):
        password = generate_password()
        assert validate_password(password) == password
