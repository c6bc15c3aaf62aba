from django.urls import path

from apps.registry import views

app_name = "registry"

urlpatterns = [
    path("", views.model_list, name="list"),
    path("import/", views.import_page, name="import"),
    path("import/jobs/", views.import_jobs, name="import_jobs"),
    path("import/<int:import_id>/cancel/", views.import_cancel, name="import_cancel"),
    path("promote/<int:checkpoint_id>/", views.promote, name="promote"),
    path("<slug:slug>/", views.model_detail, name="detail"),
    path("<slug:slug>/status/", views.model_status, name="status"),
    path("<slug:slug>/download/<str:kind>/", views.model_download, name="download"),
    path("<slug:slug>/export/", views.model_export, name="export"),
    path("<slug:slug>/exports/", views.model_exports, name="exports"),
    path("<slug:slug>/exports/<int:export_id>/cancel/", views.model_export_cancel, name="export_cancel"),
    path("<slug:slug>/exports/<int:export_id>/download/", views.model_export_download, name="export_download"),
]
