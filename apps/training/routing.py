from django.urls import path

from apps.training.consumers import RunConsumer, SweepConsumer

websocket_urlpatterns = [path("ws/training/runs/<int:run_id>/", RunConsumer.as_asgi()),
                         path("ws/training/sweeps/<int:sweep_id>/", SweepConsumer.as_asgi())]
