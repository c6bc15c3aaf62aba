from django.urls import path

from apps.training.consumers import RunConsumer

websocket_urlpatterns = [path("ws/training/runs/<int:run_id>/", RunConsumer.as_asgi())]
