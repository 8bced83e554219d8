"""The API's pagination: limit and offset, with a ceiling on the limit."""

from rest_framework import pagination


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    """``?limit=`` above ``max_limit`` is served as ``max_limit``: one request cannot ask for a
    session's million records at once (follow ``next`` instead)."""

    max_limit = 1000
