"""The console's sections (what the shell shows, one at a time); the contract every section follows.

The shell (:mod:`console.screens.shell`) shows one *section* at a time —
Overview, Logs, Users, Devices, Config, Cleanup, Alerts, Forwarding (keys 1–8) and
Audit (command palette). A section is a :class:`console.sections.section.Section` (a Textual
container) built with one argument, a :class:`console.sections.section.ConsoleContext`.
What the app gives it, through that context:

- ``context.sessions``: the ``async_sessionmaker`` of the app's engine (created in
  the app's loop on mount, disposed on unmount). Open a session per unit of
  work inside an async worker: ``async with self.context.sessions() as session``.
  Call named functions of ``db/`` (``await db.users.list_users(session=session)``);
  no SQL in screens.
- ``context.user``: the signed-in :class:`~console.sections.section.SignedInUser`
  (``username``, ``is_admin``, ``role``). Viewers may only look: gate every
  change with ``if not self.context.require_admin("create users"): return``
  (it notifies the viewer and returns False).
- ``context.notify(message, severity=...)``: a toast; ``context.settings``:
  the process's :class:`db.settings.Settings`.

What the section does:

- Runs every database call in an async worker declared
  ``@work(exclusive=True, group="<section>-<what>", exit_on_error=False)``.
  It does not catch database errors: :class:`Section` forwards a failed
  worker to the app (:class:`console.messages.ForwardsWorkerFailures`), which shows a lost connection
  as a banner with retry and
  anything else as a one-line notification (the traceback goes to the log file).
- Keeps its constructor and ``compose`` free of I/O: the shell builds a
  section the first time it is shown. Implements ``reload()`` (called when the
  section is shown, first time or again, and after the database comes back) and may implement
  ``busy_with()`` (a description of work that quitting would interrupt, e.g.
  "an export", else None).
- Declares ``TITLE`` (tab label), ``KEY`` (its number key, or None) and may
  declare ``COMMANDS`` (:class:`~console.sections.section.SectionCommand`: title,
  help, action name, admin_only) for the command palette; admin-only commands
  are hidden from viewers. ``BINDINGS`` of the section appear in the footer
  while it has focus.

- Shows lists in a :class:`console.widgets.keyed_table.KeyedTable` (``selected_key`` is the
  row under the cursor; :meth:`Section.selected_row` says what to select when there is none),
  times with :func:`console.widgets.time_format.when`, risk levels with
  :mod:`console.widgets.risk`, and every string from the database or an agent as
  :func:`console.untrusted.plain` text. It asks before changing with
  :func:`console.dialogs.confirm.confirm_then`.

Adding to a section means editing only its module (for example
``console/sections/users.py``, or a tab of ``console/sections/config/``); ``app.py`` and the
shell need no change. Dialogs and forms live in :mod:`console.dialogs`, the sign-in and the
shell in :mod:`console.screens`, and widgets that only render what they are given in
:mod:`console.widgets`.
"""
