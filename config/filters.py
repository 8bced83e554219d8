"""The project's FilterSet base: a query parameter the database cannot take is a 400 naming it,
never a 500 from the database.

Two kinds of value passed django-filter's own checks and failed in PostgreSQL (found by
schemathesis against the API's schema):

- a time whose UTC offset Python accepts (up to ±23:59) but PostgreSQL does not (±15:59):
  times are compared in UTC, so the offset never reaches the database;
- an IP address filter given something that is not one: compared as ``inet``, it is checked as
  an address first.
"""

from datetime import UTC, datetime

from django import forms
from django.core.exceptions import ValidationError
from django.db import models
from django_filters import fields as filter_fields
from django_filters import rest_framework as filters
from django_filters.rest_framework.filterset import FILTER_FOR_DBFIELD_DEFAULTS


class UTCIsoDateTimeField(filter_fields.IsoDateTimeField):
    def to_python(self, value: object) -> datetime | None:
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            raise ValidationError(
                "Enter a time that stays within years 1 to 9999 in UTC.", code="invalid"
            ) from None


class UTCIsoDateTimeFilter(filters.IsoDateTimeFilter):
    field_class = UTCIsoDateTimeField


class IPAddressFilter(filters.CharFilter):
    field_class = forms.GenericIPAddressField


class FilterSet(filters.FilterSet):
    FILTER_DEFAULTS = {
        **FILTER_FOR_DBFIELD_DEFAULTS,
        models.DateTimeField: {"filter_class": UTCIsoDateTimeFilter},
        models.GenericIPAddressField: {"filter_class": IPAddressFilter},
    }
