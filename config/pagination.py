"""The API's pagination: limit and offset for tables that stay small, keyset for the big ones."""

import base64
import binascii
import json
import uuid
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import IntegerField, Model, Q, QuerySet
from rest_framework import pagination
from rest_framework.exceptions import ValidationError
from rest_framework.filters import OrderingFilter
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    """``?limit=`` above ``max_limit`` is served as ``max_limit``: one request cannot ask for a
    session's million records at once (follow ``next`` instead)."""

    max_limit = 1000


class KeysetPagination(pagination.BasePagination):
    """Pages of a table of millions: each page starts after the last row of the one before.

    A page costs the same whatever its depth, and nothing counts the rows: an offset makes the
    database read every row before it, and a COUNT every row that matches, which on a session of
    a million records took a second per page. Pages follow one order: the view's
    ``ordering_fields``, one at a time (``?ordering=-size``), ties and all else by id; rows
    without a value come last either way. ``next`` carries the position as an opaque
    ``?cursor=``; ``?limit=`` sets the page size up to ``max_limit``.

    Each page is a seek: the rows with a value after the position, in the field's order, then
    (once those run out) the rows without one, in id order; so where an index of (field, id)
    exists the database walks it from the position and reads one page. Ordered by id the page
    is read along the primary key; an order without such an index is a sort of what the filters
    leave, so narrow it first (a session, a batch).
    """

    cursor_query_param = "cursor"
    limit_query_param = "limit"
    max_limit = 1000
    invalid_cursor = "Not a position in this list: follow the next link as given."
    other_ordering = "This cursor was made for ?ordering={ordering}: follow the next link as given."

    def paginate_queryset(
        self, queryset: QuerySet, request: Request, view: APIView | None = None
    ) -> list[Model]:
        self.request = request
        self.limit = self._limit(request)
        self.term = self._ordering(request, queryset, view)
        field, descending = self.term.lstrip("-"), self.term.startswith("-")
        self.model_field = queryset.model._meta.get_field(field)
        self.field = self.model_field.attname
        self.pk_field = queryset.model._meta.pk
        after = self._decode(request)
        rows = self._rows(queryset, descending, after, self.limit + 1)
        self.page, self.has_next = rows[: self.limit], len(rows) > self.limit
        return self.page

    def get_paginated_response(self, data: list) -> Response:
        return Response({"next": self.get_next_link(), "results": data})

    def get_next_link(self) -> str | None:
        if not self.has_next:
            return None
        last = self.page[-1]
        value = getattr(last, self.field)
        if isinstance(value, datetime):
            value = value.isoformat()  # to the microsecond (DjangoJSONEncoder stops at the ms)
        elif isinstance(value, uuid.UUID):
            value = str(value)
        row_id = last.pk if isinstance(last.pk, int) else str(last.pk)
        encoded = base64.urlsafe_b64encode(json.dumps([self.term, value, row_id]).encode())
        url = self.request.build_absolute_uri()
        return replace_query_param(url, self.cursor_query_param, encoded.decode())

    def get_paginated_response_schema(self, schema: dict) -> dict:
        return {
            "type": "object",
            "required": ["next", "results"],
            "properties": {
                "next": {
                    "type": "string",
                    "nullable": True,
                    "format": "uri",
                    "description": "The next page; null on the last.",
                },
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view: APIView) -> list[dict]:
        return [
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": "A position from a `next` link.",
                "schema": {"type": "string"},
            },
            {
                "name": self.limit_query_param,
                "required": False,
                "in": "query",
                "description": f"Rows per page, at most {self.max_limit}.",
                "schema": {"type": "integer", "minimum": 1, "maximum": self.max_limit},
            },
        ]

    # --- the pieces -----------------------------------------------------------------------------
    def _limit(self, request: Request) -> int:
        raw = request.query_params.get(self.limit_query_param)
        if raw is None:
            return api_settings.PAGE_SIZE
        try:
            limit = int(raw)
        except ValueError:
            limit = 0
        if limit < 1:
            raise ValidationError({self.limit_query_param: ["A whole number of rows, at least 1."]})
        return min(limit, self.max_limit)

    def _ordering(self, request: Request, queryset: QuerySet, view: APIView | None) -> str:
        """The first valid term of ``?ordering=``, or the view's default: one field, as
        OrderingFilter (which ignores unknown fields) reads it."""
        terms = OrderingFilter().get_ordering(request, queryset, view) or ["id"]
        return terms[0]

    def _rows(
        self, queryset: QuerySet, descending: bool, after: tuple[Any, Any] | None, count: int
    ) -> list[Model]:
        """Up to ``count`` rows after the position ``after`` (value, id), or from the start."""
        by_id = "-pk" if descending else "pk"
        id_beyond = "pk__lt" if descending else "pk__gt"
        if self.field == self.pk_field.attname:
            if after is not None:
                queryset = queryset.filter(**{id_beyond: after[1]})
            return list(queryset.order_by(by_id)[:count])
        rows: list[Model] = []
        if after is None or after[0] is not None:
            # The rows with a value: ``field >= v AND (field > v OR id > i)`` rather than the
            # equivalent OR alone, so that an index of (field, id) is entered at the position.
            present = queryset
            if self.model_field.null:
                present = present.filter(**{f"{self.field}__isnull": False})
            if after is not None:
                value, row_id = after
                beyond, reached = ("lt", "lte") if descending else ("gt", "gte")
                present = present.filter(
                    Q(**{f"{self.field}__{reached}": value})
                    & (Q(**{f"{self.field}__{beyond}": value}) | Q(**{id_beyond: row_id}))
                )
            # Plain ``field DESC``, not NULLS LAST: with the nulls filtered out both orders are
            # the same, and only the plain one is an index's order read backwards.
            order = f"-{self.field}" if descending else self.field
            rows = list(present.order_by(order, by_id)[:count])
        if len(rows) < count and self.model_field.null:
            missing = queryset.filter(**{f"{self.field}__isnull": True})
            if after is not None and after[0] is None:
                missing = missing.filter(**{id_beyond: after[1]})
            rows += list(missing.order_by(by_id)[: count - len(rows)])
        return rows

    def _decode(self, request: Request) -> tuple[Any, Any] | None:
        raw = request.query_params.get(self.cursor_query_param)
        if raw is None:
            return None
        invalid = ValidationError({self.cursor_query_param: [self.invalid_cursor]})
        try:
            # (RecursionError: JSON nested a thousand deep is a cursor of a kilobyte.)
            term, value, row_id = json.loads(base64.urlsafe_b64decode(raw.encode()))
        except (binascii.Error, UnicodeError, ValueError, TypeError, RecursionError):
            raise invalid from None
        # An integer id as a JSON number, any other (a uuid) as a string.
        id_type = int if isinstance(self.pk_field, IntegerField) else str
        if not isinstance(term, str) or not isinstance(row_id, id_type) or isinstance(row_id, bool):
            raise invalid
        if term != self.term:  # before the value, which is of the cursor's own field
            message = self.other_ordering.format(ordering=term[:100])
            raise ValidationError({self.cursor_query_param: [message]})
        try:
            value = None if value is None else self.model_field.to_python(value)
            row_id = self.pk_field.to_python(row_id)
        except (ValueError, TypeError, DjangoValidationError):
            raise invalid from None
        return value, row_id
