from django.apps import AppConfig


class TokenizationConfig(AppConfig):
    name = "apps.tokenization"
    verbose_name = "Tokenization"
