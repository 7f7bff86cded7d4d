"""Widgets: render what they are given and post messages; no I/O and no database queries.

They may import :mod:`db.vocabulary` and :mod:`db.identifiers` (plain facts), and the result types
that ``db/`` returns only under ``if TYPE_CHECKING:``; never ``db.engine``, SQLAlchemy or a function
that takes a session.
"""
