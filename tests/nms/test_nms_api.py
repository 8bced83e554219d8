"""The NMS API under /api/nms/ (JWT): CRUD, bad input refused with nothing created, credentials
masked in every response, runs and devices' actions; and the operator console's NMS pages."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from nms.api import views as nms_views
from nms.choices import DeviceStatus, RunStatus, TargetOutcome
from nms.models import (
    CredentialProfile,
    Device,
    DeviceEvent,
    DiscoveryProfile,
    DiscoveryRun,
    DiscoveryRunTarget,
    MetricSample,
)
from nms.services.devices import device_deactivate, device_provision
from tests.nms.conftest import HOST_PASSWORD

pytestmark = pytest.mark.django_db

CREDENTIAL = {
    "name": "windows-admins",
    "payload": {
        "username": "admin",
        "password": HOST_PASSWORD,
        "transport": "basic",
        "scheme": "http",
    },
}
MASKED = {"username": "admin", "password": "********", "transport": "basic", "scheme": "http"}


@pytest.fixture
def credential(api: APIClient) -> dict[str, Any]:
    response = api.post("/api/nms/credential_profiles", CREDENTIAL, format="json")
    assert response.status_code == 201, response.content
    return response.json()


@pytest.fixture
def profile(api: APIClient, credential: dict[str, Any]) -> dict[str, Any]:
    response = api.post(
        "/api/nms/discovery_profiles",
        {"name": "lab", "targets": "10.9.0.0/29", "credential": credential["id"], "port": 5985},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


@pytest.fixture
def device(api: APIClient, credential: dict[str, Any]) -> dict[str, Any]:
    response = api.post(
        "/api/nms/devices",
        {"ip": "10.9.0.7", "port": 5985, "credential": credential["id"], "hostname": "WIN-7"},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def nothing_created() -> dict[str, int]:
    return {
        "credentials": CredentialProfile.objects.count(),
        "profiles": DiscoveryProfile.objects.count(),
        "runs": DiscoveryRun.objects.count(),
        "targets": DiscoveryRunTarget.objects.count(),
        "devices": Device.objects.count(),
        "events": DeviceEvent.objects.count(),
    }


# --- authentication ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "/api/nms/credential_profiles",
        "/api/nms/discovery_profiles/",
        "/api/nms/discovery_runs",
        "/api/nms/devices",
    ],
)
def test_requests_without_a_token_get_401(url: str) -> None:
    response = APIClient().get(url)

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_writes_without_a_token_get_401_and_create_nothing(api: APIClient, profile) -> None:
    before = nothing_created()
    anonymous = APIClient()

    assert (
        anonymous.post("/api/nms/credential_profiles", CREDENTIAL, format="json").status_code == 401
    )
    assert anonymous.post(f"/api/nms/discovery_profiles/{profile['id']}/run").status_code == 401
    assert anonymous.post("/api/nms/devices", {"ip": "10.0.0.1"}, format="json").status_code == 401
    assert nothing_created() == before


# --- credential profiles -------------------------------------------------------------------------
def test_the_password_appears_in_no_response_of_the_credential_api(api: APIClient) -> None:
    bodies: list[bytes] = []

    created = api.post("/api/nms/credential_profiles", CREDENTIAL, format="json")
    bodies.append(created.content)
    assert created.status_code == 201
    assert created.json()["payload"] == MASKED
    pk = created.json()["id"]

    for response in (
        api.get("/api/nms/credential_profiles"),
        api.get(f"/api/nms/credential_profiles/{pk}"),
        api.put(
            f"/api/nms/credential_profiles/{pk}",
            {"name": "renamed", "payload": {**CREDENTIAL["payload"], "transport": "ntlm"}},
            format="json",
        ),
        api.patch(
            f"/api/nms/credential_profiles/{pk}",
            {"payload": {"password": HOST_PASSWORD + "-2"}},
            format="json",
        ),
        api.get(f"/api/nms/credential_profiles/{pk}/"),
        api.get("/api/schema/"),
    ):
        assert response.status_code == 200, response.content
        bodies.append(response.content)

    for body in bodies:
        assert HOST_PASSWORD.encode() not in body
    listed = api.get("/api/nms/credential_profiles").json()["results"][0]
    assert listed["name"] == "renamed"
    assert listed["payload"] == {**MASKED, "transport": "ntlm"}


def test_put_with_the_masked_password_keeps_the_password(api: APIClient, credential) -> None:
    from nms.services.credentials import credential_payload

    response = api.put(
        f"/api/nms/credential_profiles/{credential['id']}",
        {"name": credential["name"], "payload": {**MASKED, "username": "svc"}},
        format="json",
    )

    assert response.status_code == 200
    stored = credential_payload(CredentialProfile.objects.get(pk=credential["id"]))
    assert stored["password"] == HOST_PASSWORD and stored["username"] == "svc"


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"name": "x", "payload": "admin:secret"}, "payload", "must be a JSON object"),
        ({"name": "x", "payload": {"password": "p"}}, "username", "a user name is required"),
        ({"name": "x", "payload": {"username": "u"}}, "password", "a password is required"),
        (
            {"name": "x", "payload": {"username": "u", "password": "p", "transport": "smtp"}},
            "transport",
            "must be one of",
        ),
        ({"name": "x", "protocol": "snmp", "payload": {"username": "u"}}, "protocol", "snmp"),
        ({"payload": {"username": "u", "password": "p"}}, "name", "required"),
    ],
)
def test_bad_credentials_get_400_and_nothing_is_created(api, body, field, message) -> None:
    response = api.post("/api/nms/credential_profiles", body, format="json")

    assert response.status_code == 400
    assert message in " ".join(response.json()[field])
    assert not CredentialProfile.objects.exists()


def test_a_credential_in_use_cannot_be_deleted(api: APIClient, credential, profile) -> None:
    response = api.delete(f"/api/nms/credential_profiles/{credential['id']}")

    assert response.status_code == 409
    assert "still used by 1 discovery profile" in response.json()["detail"]
    assert CredentialProfile.objects.filter(pk=credential["id"]).exists()


def test_an_unused_credential_is_deleted(api: APIClient, credential) -> None:
    assert api.delete(f"/api/nms/credential_profiles/{credential['id']}").status_code == 204
    assert not CredentialProfile.objects.exists()


# --- discovery profiles and runs -----------------------------------------------------------------
def test_discovery_profile_crud(api: APIClient, credential) -> None:
    created = api.post(
        "/api/nms/discovery_profiles",
        {
            "name": "branch",
            "targets": "10.1.0.0/24, 10.2.0.1-10.2.0.10",
            "credential": credential["id"],
            "auto_provision": True,
            "polling_interval_seconds": 120,
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["address_count"] == 264
    assert (body["port"], body["protocol"], body["auto_provision"]) == (5985, "winrm", True)

    changed = api.patch(
        f"/api/nms/discovery_profiles/{body['id']}", {"targets": "10.3.0.0/30"}, format="json"
    )
    assert changed.status_code == 200
    assert changed.json()["address_count"] == 2
    assert api.get("/api/nms/discovery_profiles?auto_provision=true").json()["count"] == 1
    assert api.delete(f"/api/nms/discovery_profiles/{body['id']}").status_code == 204


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"targets": "0.0.0.0/0"}, "targets", "a /0 is the whole address space"),
        ({"targets": "10.0.0.9-10.0.0.1"}, "targets", "is reversed"),
        ({"targets": "fileserver.corp.example"}, "targets", "looks like a host name"),
        ({"targets": "10.0.0.1-2001:db8::1"}, "targets", "mixes IPv4 and IPv6"),
        ({"targets": ""}, "targets", "blank"),
        ({"targets": "10.0.0.0/8"}, "targets", "at most 65,536"),
        ({"port": 0}, "port", "from 1 to 65535"),
        ({"port": 65536}, "port", "from 1 to 65535"),
        ({"port": -1}, "port", "from 1 to 65535"),
        ({"polling_interval_seconds": 0}, "polling_interval_seconds", "greater than 0"),
        ({"polling_interval_seconds": -30}, "polling_interval_seconds", "greater than 0"),
        ({"credential": 999999}, "credential", "does not exist"),
    ],
)
def test_bad_discovery_profiles_get_400_and_nothing_is_created(
    api: APIClient, credential, changes, field, message
) -> None:
    before = nothing_created()
    body = {"name": "bad", "targets": "10.0.0.0/30", "credential": credential["id"], **changes}

    response = api.post("/api/nms/discovery_profiles", body, format="json")

    assert response.status_code == 400, response.content
    assert message in " ".join(response.json()[field])
    assert nothing_created() == before


def test_a_bad_change_to_a_profile_is_refused_and_changes_nothing(api: APIClient, profile) -> None:
    response = api.patch(
        f"/api/nms/discovery_profiles/{profile['id']}",
        {"targets": "10.0.0.9-10.0.0.1", "port": 70000},
        format="json",
    )

    assert response.status_code == 400
    assert set(response.json()) == {"targets", "port"}
    stored = DiscoveryProfile.objects.get(pk=profile["id"])
    assert (stored.targets, stored.port) == ("10.9.0.0/29", 5985)


def test_run_creates_a_pending_run_with_a_target_per_address(
    api: APIClient, profile, django_capture_on_commit_callbacks
) -> None:
    # When a run is started (the message is sent after commit: captured, not executed)
    with django_capture_on_commit_callbacks() as callbacks:
        response = api.post(f"/api/nms/discovery_profiles/{profile['id']}/run")

    # Then it is accepted, PENDING, with one target per address of the /29
    assert response.status_code == 202, response.content
    run = response.json()
    assert (run["status"], run["targets_total"], run["profile_name"]) == ("PENDING", 6, "lab")
    assert len(callbacks) == 1
    detail = api.get(f"/api/nms/discovery_runs/{run['id']}").json()
    assert [t["ip"] for t in detail["targets"]] == [f"10.9.0.{i}" for i in range(1, 7)]
    assert {t["outcome"] for t in detail["targets"]} == {"PENDING"}
    # And the runs are listed and filtered
    assert api.get(f"/api/nms/discovery_runs?profile={profile['id']}").json()["count"] == 1
    assert api.get("/api/nms/discovery_runs?status=COMPLETED").json()["count"] == 0
    page = api.get(f"/api/nms/discovery_runs/{run['id']}/targets?limit=2").json()
    assert page["count"] == 6 and len(page["results"]) == 2


def test_a_run_on_the_embedded_default_is_refused_saying_what_it_needs(
    api: APIClient, profile, settings
) -> None:
    # Given the embedded default: no broker, so no worker would ever take a run
    settings.CENSUS_IN_PROCESS_WORKER = True
    # When a run is started
    response = api.post(f"/api/nms/discovery_profiles/{profile['id']}/run")
    # Then it is refused with what it needs, and no run is left PENDING
    assert response.status_code == 503, response.content
    assert "CELERY_BROKER_URL" in response.json()["detail"]
    assert not DiscoveryRun.objects.exists()


def test_run_targets_can_be_filtered_by_outcome(api: APIClient, profile) -> None:
    run_id = api.post(f"/api/nms/discovery_profiles/{profile['id']}/run").json()["id"]
    DiscoveryRunTarget.objects.filter(run_id=run_id, ip="10.9.0.3").update(
        outcome=TargetOutcome.FAILED, error="connection refused"
    )

    failed = api.get(f"/api/nms/discovery_runs/{run_id}/targets?outcome=FAILED").json()

    assert [(t["ip"], t["error"]) for t in failed["results"]] == [
        ("10.9.0.3", "connection refused")
    ]
    assert api.get(f"/api/nms/discovery_runs/{run_id}/targets?outcome=NOPE").status_code == 400


def test_a_runs_detail_nests_its_first_targets_and_links_to_them_all(
    api: APIClient, profile, monkeypatch
) -> None:
    # Given a run of six targets, and a detail that nests at most four (1,000 in production:
    # a /16 nested whole was 6.4 MB in one response)
    monkeypatch.setattr(nms_views, "DETAIL_TARGETS", 4)
    run_id = api.post(f"/api/nms/discovery_profiles/{profile['id']}/run").json()["id"]

    # When its detail is read
    response = api.get(f"/api/nms/discovery_runs/{run_id}")
    assert response.status_code == 200, response.content
    detail = response.json()

    # Then it holds the first four, in the order they were expanded, and the total
    assert [t["ip"] for t in detail["targets"]] == [f"10.9.0.{i}" for i in range(1, 5)]
    assert detail["targets_total"] == 6
    # And its link pages through all six
    assert detail["targets_url"].endswith(f"/api/nms/discovery_runs/{run_id}/targets")
    everything = api.get(detail["targets_url"]).json()
    assert [t["ip"] for t in everything["results"]] == [f"10.9.0.{i}" for i in range(1, 7)]


def test_running_a_profile_whose_targets_became_invalid_gets_400_and_creates_nothing(
    api: APIClient, profile
) -> None:
    DiscoveryProfile.objects.filter(pk=profile["id"]).update(targets="10.0.0.9-10.0.0.1")

    response = api.post(f"/api/nms/discovery_profiles/{profile['id']}/run")

    assert response.status_code == 400
    assert "is reversed" in response.json()["targets"][0]
    assert not DiscoveryRun.objects.exists()


# --- devices -------------------------------------------------------------------------------------
def test_a_device_created_by_hand_is_discovered_until_provisioned(api: APIClient, device) -> None:
    assert (device["status"], device["next_deadline"], device["hostname"]) == (
        "discovered",
        None,
        "WIN-7",
    )
    event = DeviceEvent.objects.get(device_id=device["id"])
    assert (event.kind, event.from_status, event.to_status) == ("status", "", "discovered")
    assert api.get("/api/nms/devices?status=discovered").json()["count"] == 1
    assert api.get("/api/nms/devices?status=active").json()["count"] == 0


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"ip": "fileserver.corp.example"}, "ip", "looks like a host name"),
        ({"ip": "10.0.0.300"}, "ip", "is not an IP address"),
        ({"ip": ""}, "ip", "blank"),
        ({"port": 0}, "port", "from 1 to 65535"),
        ({"port": 65536}, "port", "from 1 to 65535"),
        ({"port": "http"}, "port", "from 1 to 65535"),
        ({"polling_interval_seconds": 0}, "polling_interval_seconds", "greater than 0"),
        ({"polling_interval_seconds": -5}, "polling_interval_seconds", "greater than 0"),
        ({"credential": 424242}, "credential", "does not exist"),
    ],
)
def test_bad_devices_get_400_and_nothing_is_created(
    api: APIClient, credential, changes, field, message
) -> None:
    before = nothing_created()
    body = {"ip": "10.9.0.8", "port": 5985, "credential": credential["id"], **changes}

    response = api.post("/api/nms/devices", body, format="json")

    assert response.status_code == 400, response.content
    assert message in " ".join(response.json()[field])
    assert nothing_created() == before


def test_a_second_device_on_the_same_ip_and_port_is_refused(api: APIClient, device) -> None:
    before = nothing_created()
    response = api.post(
        "/api/nms/devices",
        {"ip": "10.9.0.7", "port": 5985, "credential": device["credential"]},
        format="json",
    )

    assert response.status_code == 400
    assert f"already exists (id {device['id']})" in response.json()["ip"][0]
    assert nothing_created() == before


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"ip": "10.9.0.99"}, "ip"), ({"port": 5986}, "port"), ({"ip": "10.9.0.8", "port": 1}, "ip")],
)
def test_ip_and_port_cannot_change(api: APIClient, device, changes, field) -> None:
    response = api.patch(f"/api/nms/devices/{device['id']}", changes, format="json")

    assert response.status_code == 400
    assert "cannot change once it is created" in response.json()[field][0]
    stored = Device.objects.get(pk=device["id"])
    assert (stored.ip, stored.port) == ("10.9.0.7", 5985)


def test_other_fields_of_a_device_can_change(api: APIClient, device) -> None:
    body = {**device, "hostname": "WIN-SEVEN", "should_ping": False}

    response = api.put(f"/api/nms/devices/{device['id']}", body, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["hostname"] == "WIN-SEVEN"
    assert Device.objects.get(pk=device["id"]).should_ping is False


def test_provision_then_deactivate_a_device(api: APIClient, device) -> None:
    # When it is provisioned every 30 seconds
    before = timezone.now()
    response = api.post(
        f"/api/nms/devices/{device['id']}/provision", {"interval": 30}, format="json"
    )

    # Then it is active and due now
    assert response.status_code == 200, response.content
    stored = Device.objects.get(pk=device["id"])
    assert stored.status == DeviceStatus.ACTIVE and stored.polling_interval_seconds == 30
    assert before <= stored.schedule_anchor <= timezone.now()
    # And the API shows its next deadline on that grid
    shown = api.get(f"/api/nms/devices/{device['id']}").json()
    next_deadline = datetime.fromisoformat(shown["next_deadline"])
    assert next_deadline in (stored.schedule_anchor, stored.schedule_anchor + timedelta(seconds=30))

    # When it is deactivated
    response = api.post(f"/api/nms/devices/{device['id']}/deactivate", format="json")

    # Then it is inactive and unscheduled
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["next_deadline"]) == ("inactive", None)
    # And each status change is an event
    events = DeviceEvent.objects.filter(device_id=device["id"], kind="status").order_by("pk")
    assert [(e.from_status, e.to_status) for e in events] == [
        ("", "discovered"),
        ("discovered", "active"),
        ("active", "inactive"),
    ]
    assert "provisioned, polled every 30s" in events[1].detail
    assert "deactivated by operator through the API" in events[2].detail


@pytest.mark.parametrize(
    "body",
    [{"interval": 0}, {"interval": -10}, {"interval": "soon"}, {"interval": 1.5}, {}],
)
def test_provision_with_a_bad_interval_gets_400_and_changes_nothing(
    api: APIClient, device, body
) -> None:
    response = api.post(f"/api/nms/devices/{device['id']}/provision", body, format="json")

    assert response.status_code == 400
    assert "interval" in response.json()
    stored = Device.objects.get(pk=device["id"])
    assert (stored.status, stored.schedule_anchor) == (DeviceStatus.DISCOVERED, None)
    assert DeviceEvent.objects.filter(device_id=device["id"]).count() == 1


def test_device_deactivate_is_the_health_monitors_entry_point(api: APIClient, device) -> None:
    # Given an active device
    device_provision(device_id=device["id"], interval_seconds=60)

    # When the health monitor deactivates it, twice (a second failure report racing the first)
    first = device_deactivate(device_id=device["id"], reason="3 failures within 300s: ping")
    second = device_deactivate(device_id=device["id"], reason="3 failures within 300s: ping")

    # Then it is inactive once, with the reason in its one status event
    assert first.status == second.status == DeviceStatus.INACTIVE
    assert second.schedule_anchor is None
    events = DeviceEvent.objects.filter(device_id=device["id"], to_status="inactive")
    assert [e.detail for e in events] == ["3 failures within 300s: ping"]


def test_a_device_is_deleted(api: APIClient, device) -> None:
    assert api.delete(f"/api/nms/devices/{device['id']}").status_code == 204
    assert not Device.objects.exists()


def test_the_schema_of_the_nms_api_is_valid_and_warning_free() -> None:
    # Given the schema of this API's views alone (the whole project's is checked by
    # `manage.py spectacular --validate --fail-on-warn`)
    from django.urls import include, path
    from drf_spectacular.drainage import GENERATOR_STATS
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.validation import validate_schema

    from nms.api.urls import router

    GENERATOR_STATS.reset()
    generator = SchemaGenerator(patterns=[path("api/nms/", include(router.urls))])
    schema = generator.get_schema(request=None, public=True)

    # Then it validates, without a warning, and documents every endpoint and the masked payload
    validate_schema(schema)
    assert not GENERATOR_STATS, "drf-spectacular warned about the NMS API"
    for url in (
        "/api/nms/credential_profiles/",
        "/api/nms/discovery_profiles/{id}/run/",
        "/api/nms/discovery_runs/{id}/",
        "/api/nms/discovery_runs/{id}/targets/",
        "/api/nms/devices/{id}/provision/",
        "/api/nms/devices/{id}/deactivate/",
    ):
        assert url in schema["paths"]
    masked = schema["components"]["schemas"]["MaskedCredentialPayload"]
    assert "password" in masked["properties"]


# --- the operator console ------------------------------------------------------------------------
@pytest.fixture
def console(operator) -> Client:
    client = Client()
    client.force_login(operator)
    return client


def test_device_admin_shows_health_last_poll_and_latest_sample(console: Client, device) -> None:
    stored = Device.objects.get(pk=device["id"])
    now = timezone.now()
    Device.objects.filter(pk=stored.pk).update(
        failure_count=2, last_failure_at=now, last_poll_at=now, last_poll_success=False
    )
    MetricSample.objects.create(device=stored, collected_at=now - timedelta(minutes=5), data={})
    MetricSample.objects.create(device=stored, collected_at=now, data={"cpu_percent": 42.5})

    listing = console.get("/admin/nms/device/")
    page = console.get(f"/admin/nms/device/{stored.pk}/change/")

    assert listing.status_code == 200 and page.status_code == 200
    assert "WIN-7" in listing.content.decode()
    assert "cpu_percent" in page.content.decode() and "42.5" in page.content.decode()


def test_device_admin_actions_provision_and_deactivate(console: Client, device) -> None:
    url = "/admin/nms/device/"
    console.post(url, {"action": "provision_devices", "_selected_action": [device["id"]]})
    assert Device.objects.get(pk=device["id"]).status == DeviceStatus.ACTIVE

    console.post(url, {"action": "deactivate_devices", "_selected_action": [device["id"]]})
    stored = Device.objects.get(pk=device["id"])
    assert (stored.status, stored.schedule_anchor) == (DeviceStatus.INACTIVE, None)
    assert "in the admin" in DeviceEvent.objects.filter(to_status="inactive").get().detail


def test_discovery_admin_runs_a_profile_and_shows_outcomes_inline(console: Client, profile) -> None:
    response = console.post(
        "/admin/nms/discoveryprofile/",
        {"action": "run_discovery", "_selected_action": [profile["id"]]},
    )
    assert response.status_code == 302
    run = DiscoveryRun.objects.get()
    assert run.status == RunStatus.PENDING and run.targets_total == 6
    DiscoveryRunTarget.objects.filter(run=run, ip="10.9.0.2").update(
        outcome=TargetOutcome.FAILED, error="connection refused by 10.9.0.2:5985"
    )

    page = console.get(f"/admin/nms/discoveryrun/{run.pk}/change/").content.decode()

    assert "connection refused by 10.9.0.2:5985" in page
    assert "10.9.0.6" in page
    assert console.get(f"/admin/nms/discoveryruntarget/?run={run.pk}").status_code == 200
    assert console.get(f"/admin/nms/discoveryrun/?profile={profile['id']}").status_code == 200
    assert console.get("/admin/nms/credentialprofile/").status_code == 200


# --- 404s in words -------------------------------------------------------------------------------
UNKNOWN_ID = 999999999
DETAIL_ENDPOINTS = [
    ("get", "/api/nms/credential_profiles/{id}", "credential profile"),
    ("put", "/api/nms/credential_profiles/{id}", "credential profile"),
    ("patch", "/api/nms/credential_profiles/{id}/", "credential profile"),
    ("delete", "/api/nms/credential_profiles/{id}", "credential profile"),
    ("get", "/api/nms/discovery_profiles/{id}", "discovery profile"),
    ("put", "/api/nms/discovery_profiles/{id}", "discovery profile"),
    ("patch", "/api/nms/discovery_profiles/{id}", "discovery profile"),
    ("delete", "/api/nms/discovery_profiles/{id}/", "discovery profile"),
    ("post", "/api/nms/discovery_profiles/{id}/run", "discovery profile"),
    ("get", "/api/nms/discovery_runs/{id}", "discovery run"),
    ("get", "/api/nms/discovery_runs/{id}/targets", "discovery run"),
    ("get", "/api/nms/devices/{id}", "device"),
    ("put", "/api/nms/devices/{id}", "device"),
    ("patch", "/api/nms/devices/{id}", "device"),
    ("delete", "/api/nms/devices/{id}", "device"),
    ("post", "/api/nms/devices/{id}/provision", "device"),
    ("post", "/api/nms/devices/{id}/deactivate/", "device"),
]


@pytest.mark.parametrize("pk", [UNKNOWN_ID, "not-an-id"])
@pytest.mark.parametrize(("method", "url", "object_name"), DETAIL_ENDPOINTS)
def test_a_detail_url_that_names_nothing_is_a_404_saying_what_was_looked_for(
    api: APIClient, profile, device, method: str, url: str, object_name: str, pk: int | str
) -> None:
    # Given objects of every kind exist (a credential, a profile, its run, a device), but not this
    assert api.post(f"/api/nms/discovery_profiles/{profile['id']}/run").status_code == 202
    before = nothing_created()

    # When it is read or acted on, by an unknown id or by something that is not an id
    response = getattr(api, method)(url.format(id=pk), {}, format="json")

    # Then the 404 says in words what was not found, the same either way, naming no model class
    assert response.status_code == 404, response.content
    assert response.json() == {"detail": f"No {object_name} with this id."}
    assert nothing_created() == before


@pytest.mark.parametrize(
    "url", ["/api/nms/devices/{id}/metrics/", "/api/nms/devices/{id}/metrics/latest/"]
)
def test_the_metrics_of_an_unknown_device_are_a_404_in_words(api: APIClient, url: str) -> None:
    response = api.get(url.format(id=UNKNOWN_ID))

    assert (response.status_code, response.json()) == (404, {"detail": "No device with this id."})


def test_the_targets_of_a_run_are_not_filtered_by_the_run_filters(api: APIClient, profile) -> None:
    # Given a PENDING run
    run_id = api.post(f"/api/nms/discovery_profiles/{profile['id']}/run").json()["id"]

    # When its targets are read with a query parameter that filters runs, not targets
    response = api.get(f"/api/nms/discovery_runs/{run_id}/targets?status=COMPLETED")

    # Then the run is found by its id alone and all its targets are listed
    assert response.status_code == 200, response.content
    assert response.json()["count"] == 6
