"""Shared test helpers: servers, agents, proxies, rows.

``database``: fresh PostgreSQL and SQLite databases, migrations, settings and child-process environments
for them, and organisations, tokens, users and log events written the way the product writes them,
and the counts tests check. ``legacy``: a database upgraded past rows today's rules refuse (the
scrub's input). ``retention``: retention configurations and logs at chosen times. ``ingest``: the
ingest server in-process, hellos, raw clients and proxies. ``console``: the app under Pilot.
``waiting``: await a condition instead of sleeping.
"""
