"""The dispatcher: evaluates alert rules and forwards to SIEMs, as its own process or in the ingest server."""
