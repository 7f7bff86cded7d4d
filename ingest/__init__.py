"""The ingest server: agents stream NDJSON over TCP; every acknowledged event is committed.

``framing`` (the line reader), ``protocol`` (messages, validation at the boundary, every answer,
ProtocolError: no I/O), ``writer`` (batches, acks through a small protocol), ``connection`` (one
socket), ``server`` (accept, limits, TLS, shutdown, ``serve()``), ``stats``, ``cli``, and ``client``
(the reference agent client). ``ingest_server.py`` at the top is the entry point.
"""
