"""Widgets: render what they are given and post messages; no database access."""
