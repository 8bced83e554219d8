"""Lossless object keys.

A key is the raw bytes a source names an object by (a POSIX path is bytes, not text). It is
stored as text: the UTF-8 string when the bytes are valid UTF-8, otherwise ``base64:`` and the
bytes in base64. Absolute paths start with ``/``, so the two forms cannot be confused.
"""

import base64
import hashlib

# The mark of a key stored as base64 (its raw bytes are not UTF-8, or start with this mark).
RAW_PREFIX = "base64:"


def encode_key(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return RAW_PREFIX + base64.b64encode(raw).decode("ascii")
    if text.startswith(RAW_PREFIX):
        return RAW_PREFIX + base64.b64encode(raw).decode("ascii")
    return text


def decode_key(text: str) -> bytes:
    if text.startswith(RAW_PREFIX):
        return base64.b64decode(text[len(RAW_PREFIX) :], validate=True)
    return text.encode("utf-8")


def key_digest(raw: bytes) -> bytes:
    """128 bits of BLAKE2b over the raw key: the ``object_key_hash``, as bytes."""
    return hashlib.blake2b(raw, digest_size=16).digest()


def key_hash(raw: bytes) -> str:
    """The ``object_key_hash``: ``key_digest`` as 32 hex characters."""
    return key_digest(raw).hex()


def display_key(key: str) -> str:
    """A lossless key as a person reads it; undecodable bytes become ``\\xNN``. Never parse it."""
    try:
        raw = decode_key(key)
    except ValueError:  # binascii.Error: a "base64:" key that is not base64 is shown as stored
        return key
    return raw.decode("utf-8", errors="backslashreplace")
