"""The ingest server: agents stream NDJSON over TCP; every acknowledged event is committed."""
