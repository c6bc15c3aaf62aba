from django.urls import path

from apps.explorer import views

app_name = "explorer"

urlpatterns = [
    path("", views.page, name="page"),
    path("traces/", views.trace_request, name="trace_request"),
    path("traces/<str:key>/status/", views.trace_status, name="trace_status"),
    path("traces/<str:key>/data/", views.trace_data, name="trace_data"),
]
