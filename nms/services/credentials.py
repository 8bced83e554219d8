"""Credential profiles: payloads encrypted at rest, checked on the way in, masked on the way out.

A payload is a small JSON object (username, password, transport, ...) that only ever exists in
clear inside a function that needs it: here when it is written, in the discovery service and the
poller when they hand it to a plugin on stdin. Everything else sees ``credential_payload_masked``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from nms import crypto
from nms.choices import Protocol
from nms.models import CredentialProfile
from nms.plugins.contract import REDACTED

logger = logging.getLogger(__name__)

MASK = REDACTED
# Keys whose value is never shown: the password, and anything that looks like another secret.
_SECRET_WORDS = ("password", "secret", "token", "passphrase", "private")

WINRM_TRANSPORTS = ("ntlm", "basic", "plaintext", "kerberos", "credssp", "ssl")
SCHEMES = ("http", "https")
CERT_VALIDATION = ("validate", "ignore")
WINRM_FIELDS = ("username", "password", "transport", "scheme", "server_cert_validation")


class CredentialInvalid(ValueError):
    """A payload Census refuses; ``errors`` maps each offending field to what is wrong with it."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__("; ".join(f"{field}: {text}" for field, text in self.errors.items()))


def is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def mask_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The payload as anyone may see it: every secret replaced by ``********``."""
    return {key: (MASK if is_secret_key(key) else value) for key, value in payload.items()}


def credential_payload_validate(
    *, protocol: str, payload: Mapping[str, Any], partial_of: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A clean payload for `protocol`, or CredentialInvalid naming each wrong field.

    With `partial_of` (the current payload), a password that is missing, or that is the mask as
    this API returns it, keeps the current one: a client may send back what it read.
    """
    if protocol != Protocol.WINRM:
        raise CredentialInvalid({"protocol": f"{protocol!r} is not a supported protocol."})
    if not isinstance(payload, Mapping):
        raise CredentialInvalid({"payload": "must be a JSON object."})
    errors: dict[str, str] = {}
    unknown = sorted(set(payload) - set(WINRM_FIELDS))
    for key in unknown:
        errors[str(key)] = f"unknown field; a WinRM credential has {', '.join(WINRM_FIELDS)}."
    clean: dict[str, Any] = {}

    username = payload.get("username")
    if not isinstance(username, str) or not username.strip():
        errors["username"] = "a user name is required (user, DOMAIN\\user or user@domain)."
    else:
        clean["username"] = username.strip()

    password = payload.get("password")
    keeps_current = partial_of is not None and (password is None or password == MASK)
    if keeps_current:
        clean["password"] = partial_of.get("password", "")  # type: ignore[union-attr]
    elif not isinstance(password, str):
        errors["password"] = "a password is required (it may be empty, as a string)."  # noqa: S105
    else:
        clean["password"] = password

    for key, allowed in (
        ("transport", WINRM_TRANSPORTS),
        ("scheme", SCHEMES),
        ("server_cert_validation", CERT_VALIDATION),
    ):
        if key not in payload or payload[key] in (None, ""):
            continue
        value = payload[key]
        value = value.lower() if isinstance(value, str) else value
        if value not in allowed:
            errors[key] = f"must be one of {', '.join(allowed)}."
        else:
            clean[key] = value
    if clean.get("server_cert_validation") and clean.get("scheme") != "https":
        errors.setdefault("server_cert_validation", "applies to scheme https only.")
    if errors:
        raise CredentialInvalid(errors)
    return clean


def credential_payload(profile: CredentialProfile) -> dict[str, Any]:
    """The payload in clear. Only for handing to a plugin: never log or return it."""
    return crypto.decrypt_json(profile.payload_encrypted)


def credential_payload_masked(profile: CredentialProfile) -> dict[str, Any]:
    """The payload as the API and the admin show it, or a note when no key can read it."""
    try:
        return mask_payload(credential_payload(profile))
    except crypto.SecretUnreadable:
        return {"error": "this payload cannot be decrypted with the configured keys"}


def credential_profile_create(
    *, name: str, payload: Mapping[str, Any], protocol: str = Protocol.WINRM
) -> CredentialProfile:
    clean = credential_payload_validate(protocol=protocol, payload=payload)
    profile = CredentialProfile.objects.create(
        name=name, protocol=protocol, payload_encrypted=crypto.encrypt_json(clean)
    )
    logger.info("credential profile %s (%s) created", profile.pk, profile.name)
    return profile


def credential_profile_update(
    *,
    credential_id: int,
    name: str | None = None,
    protocol: str | None = None,
    payload: Mapping[str, Any] | None = None,
    merge_payload: bool = False,
) -> CredentialProfile:
    """Change a profile. A new payload replaces the old one (or, with `merge_payload`, changes
    only the keys it has); either way a missing or masked password keeps the current one."""
    with transaction.atomic():
        profile = CredentialProfile.objects.select_for_update().get(pk=credential_id)
        if name is not None:
            profile.name = name
        if protocol is not None and protocol != profile.protocol:
            profile.protocol = protocol
            if payload is None:
                payload = credential_payload(profile)
        if payload is not None:
            current = credential_payload(profile)
            if merge_payload:
                payload = {**current, **payload}
            clean = credential_payload_validate(
                protocol=profile.protocol, payload=payload, partial_of=current
            )
            profile.payload_encrypted = crypto.encrypt_json(clean)
        profile.save()
    logger.info("credential profile %s (%s) updated", profile.pk, profile.name)
    return profile


@dataclass
class RotationResult:
    rotated: int = 0
    unreadable: list[int] = field(default_factory=list)


def credentials_rotate() -> RotationResult:
    """Re-encrypt every payload under the newest key (the first of CENSUS_ENCRYPTION_KEYS).

    One row at a time, each under its row lock, so that a concurrent update is never lost. A token
    no configured key can read is left as it is and reported by id.
    """
    result = RotationResult()
    ids = list(CredentialProfile.objects.order_by("pk").values_list("pk", flat=True))
    for credential_id in ids:
        with transaction.atomic():
            token = (
                CredentialProfile.objects.select_for_update()
                .filter(pk=credential_id)
                .values_list("payload_encrypted", flat=True)
                .first()
            )
            if token is None:
                continue  # deleted meanwhile
            try:
                rotated = crypto.rotate(token)
            except crypto.SecretUnreadable:
                result.unreadable.append(credential_id)
                logger.error("credential profile %s cannot be decrypted; left as is", credential_id)
                continue
            CredentialProfile.objects.filter(pk=credential_id).update(payload_encrypted=rotated)
            result.rotated += 1
    logger.info("rotated %d credential payload(s)", result.rotated)
    return result
