"""What the enumeration and NMS APIs share about a 404: it says in words what was not found, and
under /api/ it is JSON even when no view answered."""

from django.db.models import Model
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import generics
from rest_framework.exceptions import NotFound

API_PREFIX = "/api/"


class NotFoundInWords(generics.GenericAPIView):
    """A detail URL that names no object is a 404 saying what was looked for, the same whether
    the id is unknown or not an id at all. (DRF would pass on Django's "No SessionState matches
    the given query.", a model's class name, for the one and "Not found." for the other.)"""

    object_name: str

    def get_object(self) -> Model:
        try:
            return super().get_object()
        except Http404 as exc:
            raise not_found_in_words(self.object_name) from exc


def not_found_in_words(object_name: str) -> NotFound:
    """The 404 of an id that names no `object_name`, for a view that looks the object up itself."""
    return NotFound(f"No {object_name} with this id.")


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """``handler404``: a path under /api/ that no view answered is DRF's JSON 404, not Django's
    HTML page; any other path gets Django's page as before.

    Every client gets the same 404, with or without a token: it echoes nothing of the request, and
    that a path is not an endpoint is no secret, since /api/schema/ lists them all to anyone.
    Django calls this only when DEBUG is False; with DEBUG on it shows its technical 404 page.
    """
    if request.path_info.startswith(API_PREFIX):
        return JsonResponse({"detail": str(NotFound.default_detail)}, status=404)
    return defaults.page_not_found(request, exception)
