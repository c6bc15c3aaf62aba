from django.urls import path

from apps.training import grpo_views, sweep_views, views, views_sft

app_name = "training"

urlpatterns = [
    path("", views.runs, name="runs"),
    path("new/", views.new, name="new"),
    path("finetune/", views_sft.finetune, name="finetune"),
    path("estimate/", views.estimate, name="estimate"),
    path("compare/", views.compare, name="compare"),
    path("runs/<int:run_id>/", views.run, name="run"),
    path("runs/<int:run_id>/panel/", views.run_panel, name="panel"),
    path("runs/<int:run_id>/metrics.json", views.metrics, name="metrics"),
    path("runs/<int:run_id>/cancel/", views.cancel, name="cancel"),
    path("runs/<int:run_id>/resume/", views.resume, name="resume"),
    path("grpo/new/", grpo_views.grpo_new, name="grpo_new"),
    path("grpo/estimate/", grpo_views.grpo_estimate, name="grpo_estimate"),
    path("runs/<int:run_id>/rollouts/", grpo_views.rollouts, name="rollouts"),
    path("runs/<int:run_id>/heldout/", grpo_views.heldout, name="heldout"),
    path("checkpoints/<int:checkpoint_id>/fork/", views.fork, name="fork"),
    path("sweeps/new/", sweep_views.sweep_new, name="sweep_new"),
    path("sweeps/preview/", sweep_views.sweep_preview, name="sweep_preview"),
    path("sweeps/<int:sweep_id>/", sweep_views.sweep, name="sweep"),
    path("sweeps/<int:sweep_id>/fit.json", sweep_views.sweep_fit, name="sweep_fit"),
    path("sweeps/<int:sweep_id>/predict/", sweep_views.sweep_predict, name="sweep_predict"),
]
