"""Subcommands of ``python -m console``, one module per area."""
