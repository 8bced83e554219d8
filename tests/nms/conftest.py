"""Fixtures for the NMS tests: an API client with a JWT, emulated Windows hosts on 127.0.0.1-20,
and credential and discovery profiles made through the services."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from rest_framework.test import APIClient

from nms.models import CredentialProfile, DiscoveryProfile
from nms.services.credentials import credential_profile_create
from nms.services.discovery import discovery_profile_create
from tests.emulators.wsman import WSManEmulator, bindable_loopback_addresses, running_emulator

HOST_USER = "Administrator"
# Distinctive, so that a search for it in logs, messages and responses cannot match by chance.
HOST_PASSWORD = "Nms-Emul4ted!S3cret-7c1f"
OPERATOR_PASSWORD = "a-long-operator-password-1"
DEVICES = 20


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Any) -> None:
    """Operators' passwords hashed cheaply: each test logs one in."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def operator(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(
        username="operator", password=OPERATOR_PASSWORD, is_staff=True, is_superuser=True
    )


@pytest.fixture
def api(operator: Any) -> APIClient:
    """A client holding a JWT obtained the way a real client does."""
    client = APIClient()
    response = client.post(
        "/api/auth/token/",
        {"username": "operator", "password": OPERATOR_PASSWORD},
        format="json",
    )
    assert response.status_code == 200, response.content
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['access']}")
    return client


@pytest.fixture(scope="session")
def host_addresses() -> list[str]:
    found = bindable_loopback_addresses(DEVICES)
    if len(found) < DEVICES or found != [f"127.0.0.{i}" for i in range(1, DEVICES + 1)]:
        pytest.skip(f"this machine lets us bind only {len(found)} of 127.0.0.1-{DEVICES}")
    return found


@pytest.fixture
def emulator(host_addresses: list[str]) -> Iterator[WSManEmulator]:
    """Twenty emulated Windows hosts, 127.0.0.1-127.0.0.20, all on one port."""
    with running_emulator(host_addresses, username=HOST_USER, password=HOST_PASSWORD) as started:
        yield started


@pytest.fixture
def make_credential() -> Callable[..., CredentialProfile]:
    def make(name: str = "hosts", password: str = HOST_PASSWORD, **extra: Any) -> CredentialProfile:
        payload = {
            "username": HOST_USER,
            "password": password,
            "transport": "basic",
            "scheme": "http",
            **extra,
        }
        return credential_profile_create(name=name, payload=payload)

    return make


@pytest.fixture
def make_profile(
    make_credential: Callable[..., CredentialProfile],
) -> Callable[..., DiscoveryProfile]:
    def make(
        *,
        port: int,
        targets: str = "127.0.0.1-127.0.0.20",
        name: str = "lab",
        credential: CredentialProfile | None = None,
        auto_provision: bool = True,
        interval: int = 60,
    ) -> DiscoveryProfile:
        return discovery_profile_create(
            name=name,
            targets=targets,
            port=port,
            credential_id=(credential or make_credential()).pk,
            auto_provision=auto_provision,
            polling_interval_seconds=interval,
        )

    return make
