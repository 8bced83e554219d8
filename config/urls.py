from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import APIRootView, SimpleRouter
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from config.api import page_not_found
from config.metrics import metrics_view
from enumeration.api.urls import app_name as enumeration_namespace
from enumeration.api.urls import router as enumeration_router
from nms.api.urls import router as nms_router


def _list_url_names(
    router: SimpleRouter, *, under: str = "", namespace: str = ""
) -> dict[str, str]:
    """{path below /api/: URL name} of the list endpoint of each viewset a router registered."""
    name_prefix = f"{namespace}:" if namespace else ""
    return {
        f"{under}{prefix}": f"{name_prefix}{basename}-list"
        for prefix, _viewset, basename in router.registry
    }


# GET /api/: a link to each endpoint (DRF's router root view, over both apps' routers), behind
# the same authentication as the endpoints themselves. Not in the schema (APIRootView says so).
api_root = APIRootView.as_view(
    api_root_dict={
        **_list_url_names(enumeration_router, namespace=enumeration_namespace),
        **_list_url_names(nms_router, under="nms/"),
        "auth/token": "token_obtain_pair",
        "auth/token/refresh": "token_refresh",
        "schema": "schema",
        "docs": "docs",
    }
)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api_root, name="api-root"),
    path("api/auth/token/", TokenObtainPairView.as_view(), name="token_obtain_pair"),
    path("api/auth/token/refresh/", TokenRefreshView.as_view(), name="token_refresh"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/nms/", include("nms.api.urls")),
    path("api/", include("enumeration.api.urls")),
    path("metrics", metrics_view, name="metrics"),
]

# A 404 that no view answered: JSON under /api/, Django's page elsewhere (when DEBUG is off).
handler404 = page_not_found
