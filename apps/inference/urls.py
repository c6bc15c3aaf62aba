from django.urls import path, re_path

from apps.inference import api, views

app_name = "inference"

urlpatterns = [
    path("generate/", views.generate, name="generate"),
    path("generate/g/<uuid:uid>.json", views.generation_json, name="generation"),
    path("generate/api/", views.api_tokens, name="api"),
    path("generate/api/tokens/<int:token_id>/revoke/", views.api_token_revoke, name="api_revoke"),
    # the OpenAI-compatible API (api.py)
    path("v1/models", api.models, name="v1_models"),
    path("v1/completions", api.completions, name="v1_completions"),
    path("v1/chat/completions", api.chat_completions, name="v1_chat_completions"),
    re_path(r"^v1/", api.not_found),  # JSON errors, never an HTML page, for an OpenAI client
]
