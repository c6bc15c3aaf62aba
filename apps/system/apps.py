from django.apps import AppConfig


class SystemConfig(AppConfig):
    name = "apps.system"
    verbose_name = "System"
