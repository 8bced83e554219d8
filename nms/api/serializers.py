"""What the NMS API shows and the input it parses.

A credential's payload is write-only: requests carry it in clear (over TLS), responses only ever
carry it masked (``"password": "********"``). Checks that need the database or the domain's rules
(targets, immutability, credential payloads) are the services'; the views turn their refusals into
400 responses with the services' words.
"""

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from enumeration.api.serializers import EnumField
from nms.choices import DeviceStatus, Protocol, RunStatus, TargetOutcome
from nms.models import CredentialProfile, Device, DiscoveryProfile, DiscoveryRun, DiscoveryRunTarget
from nms.services.credentials import (
    CERT_VALIDATION,
    MASK,
    SCHEMES,
    WINRM_TRANSPORTS,
    credential_payload_masked,
)
from nms.services.devices import MAX_PORT
from nms.services.discovery import DiscoveryInvalid, discovery_targets_validate
from nms.targets import TargetError, parse_ip_address, parse_targets

PORT_ERRORS = {
    "min_value": f"The port must be a whole number from 1 to {MAX_PORT}.",
    "max_value": f"The port must be a whole number from 1 to {MAX_PORT}.",
    "invalid": f"The port must be a whole number from 1 to {MAX_PORT}.",
}
INTERVAL_ERRORS = {
    "min_value": "The interval must be a whole number of seconds greater than 0.",
    "invalid": "The interval must be a whole number of seconds greater than 0.",
}


def port_field(**kwargs: Any) -> serializers.IntegerField:
    return serializers.IntegerField(
        min_value=1, max_value=MAX_PORT, error_messages=PORT_ERRORS, **kwargs
    )


def interval_field(**kwargs: Any) -> serializers.IntegerField:
    return serializers.IntegerField(
        min_value=1, max_value=2_147_483_647, error_messages=INTERVAL_ERRORS, **kwargs
    )


# --- credentials --------------------------------------------------------------------------------
class CredentialPayloadSerializer(serializers.Serializer):
    """A WinRM credential as a client sends it. Only for the schema: the service checks it."""

    username = serializers.CharField(help_text="user, DOMAIN\\user or user@domain")
    password = serializers.CharField(
        allow_blank=True,
        required=False,
        help_text="Required on create. On update, leave it out (or send ******** back) to keep "
        "the current password.",
    )
    transport = serializers.ChoiceField(choices=WINRM_TRANSPORTS, required=False)
    scheme = serializers.ChoiceField(choices=SCHEMES, required=False)
    server_cert_validation = serializers.ChoiceField(choices=CERT_VALIDATION, required=False)


class MaskedCredentialPayloadSerializer(serializers.Serializer):
    """A credential as every response shows it: the password is always ********."""

    username = serializers.CharField(read_only=True)
    password = serializers.CharField(read_only=True, help_text=f"Always {MASK}.")
    transport = serializers.CharField(read_only=True, required=False)
    scheme = serializers.CharField(read_only=True, required=False)
    server_cert_validation = serializers.CharField(read_only=True, required=False)


@extend_schema_field(CredentialPayloadSerializer)
class CredentialPayloadField(serializers.JSONField):
    """The payload as a JSON object, handed whole to the service that checks it."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise serializers.ValidationError(
                "The payload must be a JSON object such as "
                '{"username": "admin", "password": "...", "transport": "ntlm"}.'
            )
        return data


class CredentialProfileSerializer(serializers.ModelSerializer):
    protocol = EnumField(Protocol)
    payload = serializers.SerializerMethodField()

    class Meta:
        model = CredentialProfile
        fields = ("id", "name", "protocol", "payload", "created_at", "updated_at")
        read_only_fields = fields

    @extend_schema_field(MaskedCredentialPayloadSerializer)
    def get_payload(self, profile: CredentialProfile) -> dict[str, Any]:
        return credential_payload_masked(profile)


class CredentialProfileWriteSerializer(serializers.ModelSerializer):
    protocol = EnumField(Protocol, read_only=False, required=False)
    payload = CredentialPayloadField(write_only=True)

    class Meta:
        model = CredentialProfile
        fields = ("name", "protocol", "payload")


# --- discovery profiles -------------------------------------------------------------------------
class DiscoveryProfileSerializer(serializers.ModelSerializer):
    protocol = EnumField(Protocol, read_only=False, required=False)
    port = port_field(required=False)
    polling_interval_seconds = interval_field(required=False)
    targets = serializers.CharField(
        help_text="A CIDR (10.0.0.0/24), a range (10.0.0.1-10.0.0.50), an address, or a list "
        "of them separated by commas or spaces. IPv4 or IPv6."
    )
    address_count = serializers.SerializerMethodField()

    class Meta:
        model = DiscoveryProfile
        fields = (
            "id",
            "name",
            "targets",
            "address_count",
            "port",
            "protocol",
            "credential",
            "auto_provision",
            "polling_interval_seconds",
            "created_at",
            "updated_at",
        )
        read_only_fields = ("id", "address_count", "created_at", "updated_at")

    def validate_targets(self, value: str) -> str:
        try:
            discovery_targets_validate(targets=value)
        except DiscoveryInvalid as exc:
            raise serializers.ValidationError(exc.errors["targets"]) from None
        return value.strip()

    def get_address_count(self, profile: DiscoveryProfile) -> int | None:
        try:
            return parse_targets(profile.targets, max_hosts=2**128).count
        except TargetError:
            return None


# --- discovery runs -----------------------------------------------------------------------------
class DiscoveryRunTargetSerializer(serializers.ModelSerializer):
    outcome = EnumField(TargetOutcome)

    class Meta:
        model = DiscoveryRunTarget
        fields = ("id", "run", "ip", "outcome", "error", "device")
        read_only_fields = fields


class DiscoveryRunSerializer(serializers.ModelSerializer):
    status = EnumField(RunStatus)
    profile_name = serializers.CharField(source="profile.name", read_only=True)

    class Meta:
        model = DiscoveryRun
        fields = (
            "id",
            "profile",
            "profile_name",
            "status",
            "targets_total",
            "targets_succeeded",
            "targets_failed",
            "devices_created",
            "error",
            "created_at",
            "started_at",
            "completed_at",
        )
        read_only_fields = fields


# A run's detail nests at most this many targets (a /16 has 65,534: 6.4 MB in one response);
# ``targets_url`` pages through all of them, and filters them by outcome.
DETAIL_TARGETS = 1000


class DiscoveryRunDetailSerializer(DiscoveryRunSerializer):
    targets = DiscoveryRunTargetSerializer(
        source="first_targets",
        many=True,
        read_only=True,
        help_text=f"The first {DETAIL_TARGETS} targets, in the order they were expanded; "
        "targets_url has them all.",
    )
    targets_url = serializers.HyperlinkedIdentityField(
        view_name="nms-discovery-run-targets",
        help_text="Every target of the run, a page at a time (?outcome= filters).",
    )

    class Meta(DiscoveryRunSerializer.Meta):
        fields = (*DiscoveryRunSerializer.Meta.fields, "targets", "targets_url")
        read_only_fields = fields


# --- devices ------------------------------------------------------------------------------------
class DeviceSerializer(serializers.ModelSerializer):
    status = EnumField(DeviceStatus)
    protocol = EnumField(Protocol, read_only=False, required=False)
    ip = serializers.CharField(help_text="IPv4 or IPv6 address. Fixed once the device exists.")
    port = port_field(help_text="Fixed once the device exists.")
    polling_interval_seconds = interval_field(required=False)
    next_deadline = serializers.DateTimeField(
        read_only=True,
        allow_null=True,
        help_text="When the device is next due: the first point of its polling grid "
        "(schedule_anchor + k * polling_interval_seconds) after now; null when not active.",
    )

    class Meta:
        model = Device
        fields = (
            "id",
            "ip",
            "port",
            "protocol",
            "hostname",
            "os",
            "status",
            "credential",
            "discovery_profile",
            "polling_interval_seconds",
            "should_ping",
            "schedule_anchor",
            "next_deadline",
            "last_poll_at",
            "last_poll_success",
            "last_poll_error",
            "failure_count",
            "last_failure_at",
            "created_at",
            "updated_at",
        )
        read_only_fields = (
            "id",
            "status",
            "discovery_profile",
            "schedule_anchor",
            "last_poll_at",
            "last_poll_success",
            "last_poll_error",
            "failure_count",
            "last_failure_at",
            "created_at",
            "updated_at",
        )
        # Uniqueness and immutability of (ip, port) are the service's to say, in its words.
        validators: list = []

    def validate_ip(self, value: str) -> str:
        try:
            return parse_ip_address(value)
        except TargetError as exc:
            raise serializers.ValidationError(str(exc)) from None


class ProvisionSerializer(serializers.Serializer):
    interval = interval_field(help_text="Seconds between two polls of the device.")


class DeactivateSerializer(serializers.Serializer):
    reason = serializers.CharField(
        required=False, allow_blank=True, max_length=500, help_text="Recorded in the device event."
    )
