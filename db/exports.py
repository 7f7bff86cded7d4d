"""Where an export may write, and writing it so that no export can destroy anything.

The rules, shared by the console and any command line:

- never the database file nor its ``-wal``, ``-shm``, ``-journal`` or ``.retention.lock``
  siblings, and nothing inside the data folder (``AIFW_DATA_DIR``); symlinks and ``..``
  are resolved before comparing, so a link to the database is the database;
- an existing file only when the person confirmed replacing it (``replace=True``);
- files readable by their owner only (0600), whatever the umask, even when replacing a
  wider file: the export is a new file, never the old one rewritten;
- written to a hidden temporary file in the same folder and renamed onto the chosen name
  at the end, so a stopped or failed export leaves no half file under that name, and the
  file being replaced stays intact until the new one is complete.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import IO

from db.base import utcnow
from db.retention_lock import LOCK_FILE_SUFFIX
from db.settings import DEFAULT_DATA_DIR, Settings, sqlite_file

#: Files beside a SQLite database that belong to it: losing one loses committed data or a lock.
DATABASE_SIDE_SUFFIXES = ("-wal", "-shm", "-journal", LOCK_FILE_SUFFIX)
#: Exports hold who used which AI tool: readable by their owner only.
EXPORT_FILE_MODE = 0o600
PARTIAL_SUFFIX = ".partial"
#: The folder under the home folder where browsers and desktops put downloaded files.
DOWNLOADS_FOLDER = "Downloads"


class ExportPathError(ValueError):
    """An export may not write to this path; the message is one line saying why."""


class ExportFileExists(ExportPathError):
    """The file exists and replacing it was not confirmed: ask, then check again with ``replace=True``."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} already exists")
        self.path = path


def default_export_dir(settings: Settings) -> Path:
    """Where exports go unless the person names another folder.

    ``AIFW_EXPORT_DIR`` when set; else the user's Downloads folder (``~/Downloads``) when it exists,
    where people look for files they saved; else their home folder. Never the current directory,
    which is often the repository the console was started from.
    """
    if settings.export_dir is not None:
        return settings.export_dir
    home = Path.home()
    downloads = home / DOWNLOADS_FOLDER
    return downloads if downloads.is_dir() else home


def default_export_path(settings: Settings, fmt: str) -> Path:
    """A fresh, dated file name in :func:`default_export_dir`, e.g. ``aifw-logs-20260105-093000.csv``."""
    return default_export_dir(settings) / f"aifw-logs-{utcnow():%Y%m%d-%H%M%S}.{fmt}"


def _database_file(settings: Settings) -> Path | None:
    database = sqlite_file(settings.url) if settings.is_sqlite else None
    return None if database is None else database.resolve()


def protected_files(settings: Settings) -> list[Path]:
    """The database file and its siblings (resolved), which no export may replace."""
    database = _database_file(settings)
    if database is None:
        return []
    return [database, *(database.with_name(database.name + suffix) for suffix in DATABASE_SIDE_SUFFIXES)]


def protected_folders(settings: Settings) -> list[Path]:
    """The data folder (and the default one, which may hold an older database), resolved."""
    folders: list[Path] = []
    for folder in (settings.data_dir, DEFAULT_DATA_DIR):
        resolved = folder.expanduser().resolve()
        if resolved not in folders:
            folders.append(resolved)
    return folders


def _same_file(a: Path, b: Path) -> bool:
    # Catches what comparing names cannot: a case-insensitive file system, a bind mount.
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _inside(target: Path, folder: Path) -> bool:
    if target.is_relative_to(folder):
        return True
    return any(_same_file(ancestor, folder) for ancestor in target.parents)


def check_export_path(path: Path | str, settings: Settings, *, replace: bool) -> Path:
    """The resolved file an export to ``path`` would write, or :class:`ExportPathError` saying why not.

    Raises :class:`ExportFileExists` (an ``ExportPathError``) when the file exists and
    ``replace`` is false. A relative path is taken from the current directory: front
    ends join names with :func:`default_export_dir` first.
    """
    raw = Path(path).expanduser()
    if not str(path).strip() or raw.name in ("", ".", ".."):
        raise ExportPathError("enter a file name")
    try:
        target = raw.resolve()
    except (OSError, RuntimeError) as error:  # a symlink loop, an unreadable folder
        raise ExportPathError(f"cannot use {raw}: {error}") from None
    for protected in protected_files(settings):
        if target == protected or _same_file(target, protected):
            raise ExportPathError(f"{target} is the database ({protected.name}): an export would destroy it")
    for folder in protected_folders(settings):
        if _inside(target, folder):
            raise ExportPathError(f"{target} is inside the data folder {folder}: choose another folder")
    if target.is_dir():
        raise ExportPathError(f"{target} is a folder: add a file name")
    if not target.parent.is_dir():
        raise ExportPathError(f"no such folder: {target.parent}")
    if os.path.lexists(target):
        if not target.is_file():
            raise ExportPathError(f"{target} is not a regular file")
        if not replace:
            raise ExportFileExists(target)
    return target


class ExportFile:
    """An export being written: a hidden 0600 file beside ``target``, renamed onto it by :meth:`commit`.

    Blocking calls: run them in a thread (``asyncio.to_thread``) from async code.
    """

    def __init__(self, target: Path, *, replace: bool) -> None:
        self.target = target
        self.replace = replace
        self.partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}")
        # O_EXCL: never open someone else's file (or a link planted under this name); the mode is
        # given at creation, so the file is never readable by others, not even for a moment.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
        descriptor = os.open(self.partial, flags, EXPORT_FILE_MODE)
        try:
            os.fchmod(descriptor, EXPORT_FILE_MODE)  # a umask of 0277 would leave it 0400
            self._handle: IO[str] = os.fdopen(descriptor, "w", encoding="utf-8", newline="")
        except BaseException:
            os.close(descriptor)
            os.unlink(self.partial)
            raise

    def write(self, text: str) -> None:
        self._handle.write(text)

    def sync(self) -> None:
        """Flush everything written to the disk (slow on a big file: run it in a thread)."""
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def commit(self) -> None:
        """Put the synced file under its name; without ``replace``, never over another file.

        Quick (a close and a rename): call it directly, not in a thread, so that a cancelled
        export cannot rename the file after it was reported stopped.
        """
        self._handle.close()
        try:
            if self.replace:
                os.replace(self.partial, self.target)
            else:
                self._link_without_replacing()
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.partial)

    def _link_without_replacing(self) -> None:
        # A hard link fails if the name was taken since the check; a rename would silently replace it.
        try:
            os.link(self.partial, self.target)
        except FileExistsError:
            raise ExportFileExists(self.target) from None
        except OSError:  # a file system without hard links: check, then rename
            if os.path.lexists(self.target):
                raise ExportFileExists(self.target) from None
            os.rename(self.partial, self.target)

    def discard(self) -> None:
        """Close and remove the temporary file; the chosen name is left as it was."""
        with contextlib.suppress(OSError):
            self._handle.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.partial)


__all__ = [
    "DATABASE_SIDE_SUFFIXES",
    "EXPORT_FILE_MODE",
    "ExportFile",
    "ExportFileExists",
    "ExportPathError",
    "check_export_path",
    "default_export_dir",
    "default_export_path",
    "protected_files",
    "protected_folders",
]
