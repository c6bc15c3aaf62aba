from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("apps.system.urls")),
    path("admin/", admin.site.urls),
]

handler404 = "apps.system.views.not_found"
handler500 = "apps.system.views.server_error"
