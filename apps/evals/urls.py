from django.urls import path

from apps.evals import views

app_name = "evals"

urlpatterns = [
    path("model/<slug:slug>/", views.model_evaluations, name="model"),
    path("model/<slug:slug>/new/", views.evaluation_new, name="new"),
    path("model/<slug:slug>/fill/", views.lineage_fill, name="fill"),
    path("<int:evaluation_id>/", views.evaluation_detail, name="detail"),
    path("<int:evaluation_id>/answers/", views.evaluation_answers, name="answers"),
    path("<int:evaluation_id>/cancel/", views.evaluation_cancel, name="cancel"),
]
