"""/api/: the JSON API (README.md, "## API"). Paths work with or without a trailing slash."""

from django.urls import re_path

from apps.tokenization import api

app_name = "api"

urlpatterns = [
    re_path(r"^tokenize/?$", api.tokenize, name="tokenize"),
    re_path(r"^detokenize/?$", api.detokenize, name="detokenize"),
    re_path(r"^tokenizers/?$", api.tokenizers, name="tokenizers"),
]
