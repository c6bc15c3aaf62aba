from django.contrib import admin

from apps.evals.models import Evaluation


@admin.register(Evaluation)
class EvaluationAdmin(admin.ModelAdmin):
    list_display = ("id", "model", "method", "dataset", "split", "n", "k", "status", "created")
    list_filter = ("method", "status")
    search_fields = ("model__name", "dataset")
    readonly_fields = ("results", "notes", "answers_path", "task_key")
