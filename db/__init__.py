"""Data layer of the AI Usage Firewall: models, engine, queries, retention, security.

Nothing in this package imports Textual; the console, the ingest server and the
cron cleanup all reach the database through the functions defined here.
"""
