from django.urls import path

from apps.evals.consumers import EvaluationConsumer, ModelEvalsConsumer

websocket_urlpatterns = [
    path("ws/evals/model/<int:model_id>/", ModelEvalsConsumer.as_asgi()),
    path("ws/evals/evaluation/<int:evaluation_id>/", EvaluationConsumer.as_asgi()),
]
