from django.urls import path

from apps.explorer.consumers import TraceConsumer

websocket_urlpatterns = [path("ws/explorer/traces/<str:key>/", TraceConsumer.as_asgi())]
