"""Shared test helpers: servers, agents, proxies, rows.

``database``: fresh PostgreSQL and SQLite databases, settings and child-process environments for
them, and organisations, tokens, users and log events written the way the product writes them.
``ingest``: the ingest server in-process, raw clients and proxies. ``waiting``: await a condition
instead of sleeping.
"""
