from django.apps import AppConfig


class CorporaConfig(AppConfig):
    name = "apps.corpora"
    verbose_name = "Corpora"
