"""The log retention cleanup's command line (``cleanup_logs.py``, ``aifw-cleanup``): no Textual, no console.

What a cleanup does lives in :mod:`db.retention` (the batched deletes, the run records and their audit
rows), :mod:`db.retention_lock` (one cleanup at a time) and :mod:`db.scheduler` (the in-process
schedule); :mod:`retention.cli` only reads the arguments, runs it and reports.
"""
