from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("apps.system.urls")),
    path("data/", include("apps.corpora.urls")),
    path("tokenizers/", include("apps.tokenization.urls")),
    path("api/", include("apps.tokenization.api_urls")),
    path("training/", include("apps.training.urls")),
    path("explorer/", include("apps.explorer.urls")),
    path("models/", include("apps.registry.urls")),
    path("", include("apps.inference.urls")),  # generate/ (the page) and v1/ (the OpenAI-compatible API)
    path("arena/", include("apps.arena.urls")),
    path("evals/", include("apps.evals.urls")),
    path("admin/", admin.site.urls),
]

handler404 = "apps.system.views.not_found"
handler500 = "apps.system.views.server_error"
