from django.contrib import admin
from django.urls import include, path
from django.views.i18n import JavaScriptCatalog, set_language

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
    path("admin/", admin.site.urls),
    path("i18n/setlang/", set_language, name="set_language"),  # the header's language switch posts here
    path("jsi18n/", JavaScriptCatalog.as_view(), name="javascript-catalog"),  # gettext() for static/js
]

handler404 = "apps.system.views.not_found"
handler500 = "apps.system.views.server_error"
