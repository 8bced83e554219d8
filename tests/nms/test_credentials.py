"""Credential payloads: encrypted at rest, checked on the way in, masked in the admin, rotated."""

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client

from nms import crypto
from nms.models import CredentialProfile
from nms.services.credentials import (
    CredentialInvalid,
    credential_payload,
    credential_payload_masked,
    credential_profile_create,
    credential_profile_update,
)
from tests.nms.conftest import HOST_PASSWORD

pytestmark = pytest.mark.django_db


def raw_payload_column(profile_id: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT payload_encrypted FROM nms_credentialprofile WHERE id = %s", [profile_id]
        )
        return cursor.fetchone()[0]


def test_the_database_column_holds_a_token_not_the_password(make_credential) -> None:
    # Given a credential profile
    profile = make_credential()

    # When its column is read straight from the database
    stored = raw_payload_column(profile.pk)

    # Then it holds a Fernet token: neither the password nor the user name is in it
    assert HOST_PASSWORD not in stored
    assert "Administrator" not in stored
    assert stored.startswith("gAAAA")
    # And the service reads it back
    assert credential_payload(profile)["password"] == HOST_PASSWORD


def test_masked_payload_shows_everything_but_the_password(make_credential) -> None:
    profile = make_credential()

    assert credential_payload_masked(profile) == {
        "username": "Administrator",
        "password": "********",
        "transport": "basic",
        "scheme": "http",
    }


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({"password": "x"}, "username", "a user name is required"),
        ({"username": " ", "password": "x"}, "username", "a user name is required"),
        ({"username": "u"}, "password", "a password is required"),
        ({"username": "u", "password": 5}, "password", "a password is required"),
        ({"username": "u", "password": "x", "transport": "carrier-pigeon"}, "transport", "one of"),
        ({"username": "u", "password": "x", "scheme": "ftp"}, "scheme", "one of http, https"),
        ({"username": "u", "password": "x", "passwrd": "y"}, "passwrd", "unknown field"),
        (
            {"username": "u", "password": "x", "server_cert_validation": "ignore"},
            "server_cert_validation",
            "https only",
        ),
    ],
)
def test_bad_payloads_are_refused_and_nothing_is_saved(payload, field, message) -> None:
    with pytest.raises(CredentialInvalid) as refused:
        credential_profile_create(name="bad", payload=payload)

    assert message in refused.value.errors[field]
    assert not CredentialProfile.objects.exists()


def test_an_update_without_a_password_or_with_the_mask_keeps_the_password(make_credential) -> None:
    profile = make_credential()

    credential_profile_update(
        credential_id=profile.pk, payload={"username": "svc", "transport": "ntlm"}
    )
    profile.refresh_from_db()
    assert credential_payload(profile) == {
        "username": "svc",
        "password": HOST_PASSWORD,
        "transport": "ntlm",
    }

    credential_profile_update(
        credential_id=profile.pk, payload={"username": "svc", "password": "********"}
    )
    profile.refresh_from_db()
    assert credential_payload(profile)["password"] == HOST_PASSWORD

    credential_profile_update(
        credential_id=profile.pk, payload={"username": "svc", "password": "new"}
    )
    profile.refresh_from_db()
    assert credential_payload(profile)["password"] == "new"


# --- rotation ------------------------------------------------------------------------------------
def test_rotation_re_encrypts_every_payload_under_the_newest_key(settings, make_credential) -> None:
    # Given two payloads encrypted under an old key
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.CENSUS_ENCRYPTION_KEYS = [old_key]
    first = make_credential(name="first")
    second = make_credential(name="second", password="other-Secret-9")
    before = {p: raw_payload_column(p.pk) for p in (first, second)}

    # When a new key is put in front and the payloads are rotated
    settings.CENSUS_ENCRYPTION_KEYS = [new_key, old_key]
    call_command("rotate_credentials")

    # Then every column changed, and the new key alone reads each of them
    for profile, old_token in before.items():
        token = raw_payload_column(profile.pk)
        assert token != old_token
        assert HOST_PASSWORD not in token
        assert Fernet(new_key.encode()).decrypt(token.encode())
    # And the old key can be removed: the payloads still decrypt
    settings.CENSUS_ENCRYPTION_KEYS = [new_key]
    assert (
        credential_payload(CredentialProfile.objects.get(pk=first.pk))["password"] == HOST_PASSWORD
    )
    assert credential_payload(CredentialProfile.objects.get(pk=second.pk))["password"] == (
        "other-Secret-9"
    )


def test_rotation_reports_payloads_no_key_can_read(settings, make_credential) -> None:
    # Given a payload under a key that has since been removed
    lost = Fernet.generate_key().decode()
    settings.CENSUS_ENCRYPTION_KEYS = [lost]
    profile = make_credential()
    settings.CENSUS_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    # When rotating, then the command fails naming it, and leaves the token as it was
    token = raw_payload_column(profile.pk)
    with pytest.raises(CommandError, match=f"ids: {profile.pk}"):
        call_command("rotate_credentials")
    assert raw_payload_column(profile.pk) == token
    with pytest.raises(crypto.SecretUnreadable):
        credential_payload(profile)
    # And the API's masked view says so instead of failing
    assert "cannot be decrypted" in credential_payload_masked(profile)["error"]


# --- admin ---------------------------------------------------------------------------------------
@pytest.fixture
def admin_client_logged_in(operator) -> Client:
    client = Client()
    client.force_login(operator)
    return client


def test_admin_never_shows_the_password_and_keeps_it_when_left_empty(
    admin_client_logged_in: Client, make_credential
) -> None:
    # Given a credential profile
    profile = make_credential()
    url = f"/admin/nms/credentialprofile/{profile.pk}/change/"

    # When its change page and the list are shown, then the password is not on them
    page = admin_client_logged_in.get(url)
    assert page.status_code == 200
    assert HOST_PASSWORD not in page.content.decode()
    assert "********" in page.content.decode()
    listing = admin_client_logged_in.get("/admin/nms/credentialprofile/")
    assert HOST_PASSWORD not in listing.content.decode()

    # When it is saved with the password field empty, then the password is kept
    form = {
        "name": "hosts",
        "protocol": "winrm",
        "username": "svc-census",
        "password": "",
        "transport": "basic",
        "scheme": "http",
        "server_cert_validation": "",
    }
    response = admin_client_logged_in.post(url, form)
    assert response.status_code == 302, response.content.decode()[:3000]
    profile.refresh_from_db()
    assert credential_payload(profile) == {
        "username": "svc-census",
        "password": HOST_PASSWORD,
        "transport": "basic",
        "scheme": "http",
    }

    # When a new password is typed, then it replaces the old one, and is not shown either
    admin_client_logged_in.post(url, {**form, "password": "Brand-new-Secret-1"})
    profile.refresh_from_db()
    assert credential_payload(profile)["password"] == "Brand-new-Secret-1"
    assert "Brand-new-Secret-1" not in admin_client_logged_in.get(url).content.decode()


def test_admin_creates_a_profile_encrypted_and_refuses_one_without_a_password(
    admin_client_logged_in: Client,
) -> None:
    form = {"name": "new", "protocol": "winrm", "username": "admin", "transport": "ntlm"}

    refused = admin_client_logged_in.post("/admin/nms/credentialprofile/add/", form)
    assert refused.status_code == 200
    assert "This field is required" in refused.content.decode()
    assert not CredentialProfile.objects.exists()

    created = admin_client_logged_in.post(
        "/admin/nms/credentialprofile/add/", {**form, "password": "Adm1n-Secret"}
    )
    assert created.status_code == 302
    profile = CredentialProfile.objects.get(name="new")
    assert "Adm1n-Secret" not in raw_payload_column(profile.pk)
    assert credential_payload(profile) == {
        "username": "admin",
        "password": "Adm1n-Secret",
        "transport": "ntlm",
    }
