"""Secrets at rest: credential payloads are Fernet tokens under a MultiFernet keyring.

``CENSUS_ENCRYPTION_KEYS`` is a comma-separated list of Fernet keys, newest first: the first key
encrypts, every key decrypts, so a key is rotated by putting a new one in front and running
``manage.py rotate_credentials``. Unset, one key is derived from ``SECRET_KEY`` (HKDF-SHA256),
which suits a laptop; production sets its own keys.
"""

import base64
import json
from functools import cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings


class SecretUnreadable(Exception):
    """A token none of the configured keys can decrypt (a key was removed too early?)."""


def _derived_key(secret_key: str) -> bytes:
    raw = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"census-credentials", info=b"fernet"
    ).derive(secret_key.encode())
    return base64.urlsafe_b64encode(raw)


@cache
def _keyring(keys: tuple[str, ...], secret_key: str) -> MultiFernet:
    fernets = [Fernet(k.encode()) for k in keys] or [Fernet(_derived_key(secret_key))]
    return MultiFernet(fernets)


def keyring() -> MultiFernet:
    return _keyring(tuple(settings.CENSUS_ENCRYPTION_KEYS), settings.SECRET_KEY)


def encrypt_json(value: dict[str, Any]) -> str:
    return keyring().encrypt(json.dumps(value, separators=(",", ":")).encode()).decode("ascii")


def decrypt_json(token: str) -> dict[str, Any]:
    try:
        return json.loads(keyring().decrypt(token.encode("ascii")))
    except InvalidToken as exc:
        raise SecretUnreadable("no configured key decrypts this secret") from exc


def rotate(token: str) -> str:
    """Re-encrypt a token under the first (newest) key."""
    try:
        return keyring().rotate(token.encode("ascii")).decode("ascii")
    except InvalidToken as exc:
        raise SecretUnreadable("no configured key decrypts this secret") from exc
