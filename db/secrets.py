"""Destination secrets at rest: HEC tokens, webhook keys and TLS client keys, encrypted with Fernet.

The forwarder must use these secrets, so they cannot be hashed like ingest tokens. They are
encrypted (AES-128-CBC with an HMAC-SHA256, Fernet) with a key that is not in the database:

- ``AIFW_SECRET_KEY``: one or more Fernet keys, comma-separated; the first encrypts, every one
  decrypts (rotation: put the new key first, run ``python -m console secrets rotate``, which
  re-encrypts every stored secret, then drop the old key);
- otherwise the key file ``secret.key`` in the data folder, mode 0600, created on first use
  (so the demo and a first install need nothing). A key file readable by others is refused.

A lost key cannot be recovered: the secrets it encrypted are unreadable, the destinations that
need them pause with "secret cannot be decrypted: enter it again", and an administrator
enters each secret again.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from db.settings import Settings

KEY_FILE_NAME = "secret.key"


class SecretKeyError(Exception):
    """The key cannot be read or made (the message says which file or setting and why)."""


class SecretUnreadable(Exception):
    """A stored secret does not decrypt with the keys at hand (lost or rotated away)."""


class SecretBox:
    """Encrypts and decrypts destination secrets with the configured keys."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise SecretKeyError("no secret key given")
        try:
            self._fernet = MultiFernet([Fernet(key) for key in keys])
        except ValueError as error:
            raise SecretKeyError(f"AIFW_SECRET_KEY: not a Fernet key ({error})") from None

    def encrypt(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode()
        except (InvalidToken, ValueError, UnicodeError):
            raise SecretUnreadable(
                "secret cannot be decrypted with the current key: enter it again"
            ) from None

    def rotate(self, ciphertext: str) -> str:
        """The same secret encrypted with the first key."""
        try:
            return self._fernet.rotate(ciphertext.encode("ascii")).decode("ascii")
        except (InvalidToken, ValueError):
            raise SecretUnreadable(
                "secret cannot be decrypted with the current key: enter it again"
            ) from None


def key_file_path(settings: Settings) -> Path:
    return settings.data_dir / KEY_FILE_NAME


def _read_or_create_key_file(path: Path) -> bytes:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # O_EXCL: two processes starting together make one key, not two.
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(descriptor, "wb") as file:
                file.write(Fernet.generate_key() + b"\n")
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise SecretKeyError(
                f"{path}: key file must be readable by its owner only (chmod 600; it is {mode:o})"
            )
        key = path.read_bytes().strip()
    except OSError as error:
        raise SecretKeyError(
            f"{path}: cannot read or create the secret key file ({error.strerror})"
        ) from None
    if not key:
        raise SecretKeyError(f"{path}: the secret key file is empty")
    return key


def secret_box_for(settings: Settings) -> SecretBox:
    """The box for these settings: AIFW_SECRET_KEY's keys, else the data folder's key file."""
    if settings.secret_key:
        return SecretBox([key.strip().encode() for key in settings.secret_key.split(",") if key.strip()])
    return SecretBox([_read_or_create_key_file(key_file_path(settings))])
