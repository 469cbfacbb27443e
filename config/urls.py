from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import include, path, re_path

from config.api import api
from executions import health
from executions.compat import discuro, julep, moderately


def api_not_found(request: HttpRequest) -> JsonResponse:
    """Unknown API paths answer JSON like the rest of the API, never an HTML page."""
    return JsonResponse(
        {"error": f"no API endpoint at {request.path}", "code": "not_found"}, status=404
    )


urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("api/v1/", api.urls),
    re_path(r"^api/", api_not_found),
    path("julep/", include(julep.urlpatterns)),
    path("moderately/", include(moderately.urlpatterns)),
    path("discuro/", include(discuro.urlpatterns)),
    path("admin/", admin.site.urls),
    path("", include("executions.urls")),
]
