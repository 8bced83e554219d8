"""The operator console for the network monitor.

Credential payloads are never shown in clear: the form takes a new password but never renders the
current one, and the payload is displayed masked. Statuses, health and run outcomes are read-only:
they change through the services, which the actions call. List filters are the API's FilterSets
(``nms.filters``), so a filter means the same thing in both places.
"""

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from enumeration.admin import ReadOnlyAdmin, filterset_list_filter
from nms import crypto, selectors
from nms.filters import (
    DeviceFilterSet,
    DiscoveryProfileFilterSet,
    DiscoveryRunFilterSet,
    DiscoveryRunTargetFilterSet,
)
from nms.models import (
    CredentialProfile,
    Device,
    DeviceEvent,
    DiscoveryProfile,
    DiscoveryRun,
    DiscoveryRunTarget,
)
from nms.services import credentials, devices, discovery

INLINE_LIMIT = 500


def _report(
    request: HttpRequest, model_admin: admin.ModelAdmin, done: list[str], refused: list[str]
) -> None:
    for line in done:
        model_admin.message_user(request, line, messages.SUCCESS)
    for line in refused:
        model_admin.message_user(request, line, messages.ERROR)


def _form_errors(form: forms.Form, errors: dict[str, str]) -> None:
    for field, text in errors.items():
        form.add_error(field if field in form.fields else None, f"{field}: {text}")


class LimitedInlineFormSet(BaseInlineFormSet):
    """Shows the first INLINE_LIMIT rows only: a run may have 65,536 targets."""

    def get_queryset(self) -> QuerySet:
        if not hasattr(self, "_limited"):
            self._limited = super().get_queryset()[:INLINE_LIMIT]
        return self._limited


class ReadOnlyInline(admin.TabularInline):
    formset = LimitedInlineFormSet
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


# --- credential profiles ------------------------------------------------------------------------
class CredentialProfileForm(forms.ModelForm):
    """The payload as separate fields. The password field is always empty: a new password
    replaces the current one, an empty field keeps it."""

    username = forms.CharField(max_length=256)
    password = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Leave empty to keep the current password.",
    )
    transport = forms.ChoiceField(
        required=False,
        choices=[("", "(default: ntlm)")] + [(t, t) for t in credentials.WINRM_TRANSPORTS],
    )
    scheme = forms.ChoiceField(
        required=False, choices=[("", "(default: http)")] + [(s, s) for s in credentials.SCHEMES]
    )
    server_cert_validation = forms.ChoiceField(
        required=False,
        choices=[("", "(default: validate)")] + [(c, c) for c in credentials.CERT_VALIDATION],
    )

    class Meta:
        model = CredentialProfile
        fields = ("name", "protocol")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.current: dict[str, Any] | None = None
        if self.instance.pk:
            try:
                self.current = credentials.credential_payload(self.instance)
            except crypto.SecretUnreadable:
                self.current = None
            for name in ("username", "transport", "scheme", "server_cert_validation"):
                if self.current and name in self.current:
                    self.fields[name].initial = self.current[name]
        else:
            self.fields["password"].required = True
            self.fields["password"].help_text = "It is never shown again."

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        payload: dict[str, Any] = {"username": cleaned.get("username", "")}
        for name in ("transport", "scheme", "server_cert_validation"):
            if cleaned.get(name):
                payload[name] = cleaned[name]
        password = cleaned.get("password", "")
        if password or not self.instance.pk:
            payload["password"] = password
        try:
            self.payload = credentials.credential_payload_validate(
                protocol=cleaned.get("protocol") or self.instance.protocol,
                payload=payload,
                partial_of=self.current if self.instance.pk else None,
            )
        except credentials.CredentialInvalid as exc:
            _form_errors(self, exc.errors)
        return cleaned


@admin.register(CredentialProfile)
class CredentialProfileAdmin(admin.ModelAdmin):
    form = CredentialProfileForm
    list_display = ("name", "protocol", "masked_payload", "updated_at")
    search_fields = ("name",)
    readonly_fields = ("masked_payload", "created_at", "updated_at")

    def get_fields(self, request: HttpRequest, obj: CredentialProfile | None = None) -> list[str]:
        fields = ["name", "protocol", "username", "password", "transport", "scheme"]
        fields.append("server_cert_validation")
        return [*fields, *(("masked_payload", "created_at", "updated_at") if obj else ())]

    @admin.display(description="payload")
    def masked_payload(self, profile: CredentialProfile) -> str:
        return json.dumps(credentials.credential_payload_masked(profile))

    def save_model(
        self,
        request: HttpRequest,
        obj: CredentialProfile,
        form: CredentialProfileForm,
        change: bool,
    ) -> None:
        if change:
            credentials.credential_profile_update(
                credential_id=obj.pk, name=obj.name, protocol=obj.protocol, payload=form.payload
            )
        else:
            obj.pk = credentials.credential_profile_create(
                name=obj.name, protocol=obj.protocol, payload=form.payload
            ).pk
        obj.refresh_from_db()


# --- discovery ----------------------------------------------------------------------------------
class PortAndIntervalChecks:
    """Form checks shared by the forms with a port and a polling interval."""

    cleaned_data: dict

    def clean_port(self) -> int:
        port = self.cleaned_data["port"]
        if not 1 <= port <= devices.MAX_PORT:
            raise forms.ValidationError("The port must be a whole number from 1 to 65535.")
        return port

    def clean_polling_interval_seconds(self) -> int:
        interval = self.cleaned_data["polling_interval_seconds"]
        if interval <= 0:
            raise forms.ValidationError("The interval must be a number of seconds above 0.")
        return interval


class DiscoveryProfileForm(PortAndIntervalChecks, forms.ModelForm):
    class Meta:
        model = DiscoveryProfile
        fields = (
            "name",
            "targets",
            "port",
            "protocol",
            "credential",
            "auto_provision",
            "polling_interval_seconds",
        )

    def clean_targets(self) -> str:
        targets = self.cleaned_data["targets"]
        try:
            discovery.discovery_targets_validate(targets=targets)
        except discovery.DiscoveryInvalid as exc:
            raise forms.ValidationError(exc.errors["targets"]) from None
        return targets.strip()


@admin.register(DiscoveryProfile)
class DiscoveryProfileAdmin(admin.ModelAdmin):
    form = DiscoveryProfileForm
    list_display = (
        "name",
        "targets",
        "port",
        "protocol",
        "credential",
        "auto_provision",
        "polling_interval_seconds",
        "runs",
    )
    list_filter = (
        filterset_list_filter(DiscoveryProfileFilterSet, "protocol"),
        filterset_list_filter(DiscoveryProfileFilterSet, "auto_provision"),
    )
    list_select_related = ("credential",)
    search_fields = ("name", "targets")
    actions = ("run_discovery",)

    @admin.display(description="runs")
    def runs(self, profile: DiscoveryProfile) -> str:
        url = reverse("admin:nms_discoveryrun_changelist")
        return format_html('<a href="{}?profile={}">runs</a>', url, profile.pk)

    def save_model(
        self, request: HttpRequest, obj: DiscoveryProfile, form: forms.ModelForm, change: bool
    ) -> None:
        values = {name: form.cleaned_data[name] for name in form.Meta.fields}
        values["credential_id"] = values.pop("credential").pk
        if change:
            discovery.discovery_profile_update(profile_id=obj.pk, changes=values)
        else:
            obj.pk = discovery.discovery_profile_create(**values).pk
        obj.refresh_from_db()

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("nms.change_discoveryprofile")

    @admin.action(description="Run discovery for the selected profiles", permissions=["operate"])
    def run_discovery(self, request: HttpRequest, queryset: QuerySet[DiscoveryProfile]) -> None:
        done, refused = [], []
        for profile in queryset:
            try:
                run = discovery.discovery_run_start(profile_id=profile.pk)
            except discovery.DiscoveryInvalid as exc:
                refused.append(f"{profile.name}: not run: {exc}")
            else:
                done.append(f"{profile.name}: run {run.pk} started, {run.targets_total} target(s).")
        _report(request, self, done, refused)


class DiscoveryRunTargetInline(ReadOnlyInline):
    model = DiscoveryRunTarget
    fields = ("ip", "outcome", "error", "device")
    readonly_fields = fields
    verbose_name_plural = f"targets (the first {INLINE_LIMIT}; all of them under Run targets)"


@admin.register(DiscoveryRun)
class DiscoveryRunAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "profile",
        "status",
        "targets_total",
        "targets_succeeded",
        "targets_failed",
        "devices_created",
        "created_at",
        "completed_at",
    )
    list_filter = (filterset_list_filter(DiscoveryRunFilterSet, "status"),)
    list_select_related = ("profile",)
    search_fields = ("profile__name",)
    inlines = (DiscoveryRunTargetInline,)
    readonly_fields = ("all_targets",)

    @admin.display(description="all targets")
    def all_targets(self, run: DiscoveryRun) -> str:
        url = reverse("admin:nms_discoveryruntarget_changelist")
        counts = selectors.discovery_run_outcome_counts(run_id=run.pk)
        shown = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "none"
        return format_html('<a href="{}?run={}">{}</a>', url, run.pk, shown)


@admin.register(DiscoveryRunTarget)
class DiscoveryRunTargetAdmin(ReadOnlyAdmin):
    list_display = ("ip", "outcome", "error", "run", "device")
    # ?run=<id> (the link on a run's page) narrows the list to one run.
    list_filter = (filterset_list_filter(DiscoveryRunTargetFilterSet, "outcome"),)
    list_select_related = ("run", "device")
    search_fields = ("=ip",)
    show_full_result_count = False


# --- devices ------------------------------------------------------------------------------------
class DeviceEventInline(ReadOnlyInline):
    model = DeviceEvent
    fields = ("occurred_at", "kind", "reason", "from_status", "to_status", "detail")
    readonly_fields = fields
    ordering = ("-occurred_at",)
    verbose_name_plural = f"events (the latest {INLINE_LIMIT})"


class DeviceForm(PortAndIntervalChecks, forms.ModelForm):
    class Meta:
        model = Device
        fields = (
            "ip",
            "port",
            "protocol",
            "hostname",
            "os",
            "credential",
            "polling_interval_seconds",
            "should_ping",
        )


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    form = DeviceForm
    list_display = (
        "ip",
        "port",
        "hostname",
        "status",
        "failure_count",
        "last_failure_at",
        "last_poll_at",
        "last_poll_success",
        "latest_sample_at",
    )
    list_filter = (
        filterset_list_filter(DeviceFilterSet, "status"),
        filterset_list_filter(DeviceFilterSet, "protocol"),
        filterset_list_filter(DeviceFilterSet, "last_poll_success"),
    )
    search_fields = ("hostname", "=ip")
    search_help_text = "Part of the host name, or an IP address exactly."
    actions = ("provision_devices", "deactivate_devices")
    inlines = (DeviceEventInline,)
    health_fields = (
        "status",
        "schedule_anchor",
        "next_deadline",
        "failure_count",
        "last_failure_at",
        "last_poll_at",
        "last_poll_success",
        "last_poll_error",
        "latest_sample",
        "discovery_profile",
        "created_at",
        "updated_at",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Device]:
        return selectors.device_list(with_latest_sample=True)

    def get_fields(self, request: HttpRequest, obj: Device | None = None) -> list[str]:
        fields = list(DeviceForm.Meta.fields)
        return [*fields, *self.health_fields] if obj else fields

    def get_readonly_fields(self, request: HttpRequest, obj: Device | None = None) -> list[str]:
        # IP and port are fixed once the device exists.
        return ["ip", "port", *self.health_fields] if obj else []

    @admin.display(description="latest sample", ordering="latest_sample_at")
    def latest_sample_at(self, device: Device) -> Any:
        return getattr(device, "latest_sample_at", None)

    @admin.display(description="latest metric sample")
    def latest_sample(self, device: Device) -> str:
        sample = selectors.device_latest_sample(device_id=device.pk)
        if sample is None:
            return "none yet"
        text = json.dumps(sample.data, indent=1, sort_keys=True)
        if len(text) > 4000:
            text = text[:4000] + "\n…"
        return format_html("{}<pre>{}</pre>", sample.collected_at.isoformat(), text)

    def save_model(
        self, request: HttpRequest, obj: Device, form: forms.ModelForm, change: bool
    ) -> None:
        values = dict(form.cleaned_data)
        values["credential_id"] = values.pop("credential").pk
        try:
            if change:
                values.pop("ip", None)
                values.pop("port", None)
                devices.device_update(device_id=obj.pk, changes=values)
            else:
                obj.pk = devices.device_create(**values).pk
        except devices.DeviceInvalid as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        obj.refresh_from_db()

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("nms.change_device")

    @admin.action(
        description="Provision selected devices (poll at their interval, from now)",
        permissions=["operate"],
    )
    def provision_devices(self, request: HttpRequest, queryset: QuerySet[Device]) -> None:
        done, refused = [], []
        chosen = list(queryset.values_list("pk", "polling_interval_seconds"))
        for device_id, interval in chosen:
            try:
                # Several at once are spread over their interval, not all due in one tick.
                device = devices.device_provision(
                    device_id=device_id, interval_seconds=interval, spread=len(chosen) > 1
                )
            except (devices.DeviceConflict, devices.DeviceInvalid) as exc:
                refused.append(f"Device {device_id} was not provisioned: {exc}")
            else:
                done.append(f"{device} provisioned, polled every {interval}s.")
        _report(request, self, done, refused)

    @admin.action(description="Deactivate selected devices", permissions=["operate"])
    def deactivate_devices(self, request: HttpRequest, queryset: QuerySet[Device]) -> None:
        done, refused = [], []
        reason = f"deactivated by {request.user.get_username()} in the admin"
        for device_id in queryset.values_list("pk", flat=True):
            try:
                device = devices.device_deactivate(device_id=device_id, reason=reason)
            except devices.DeviceConflict as exc:
                refused.append(f"Device {device_id} was not deactivated: {exc}")
            else:
                done.append(f"{device} deactivated.")
        _report(request, self, done, refused)
