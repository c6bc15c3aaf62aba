from django.apps import AppConfig


class EvalsConfig(AppConfig):
    name = "apps.evals"
    verbose_name = "Evaluation"
