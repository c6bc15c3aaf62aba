from django.urls import path

from apps.inference.consumers import GenerateConsumer

websocket_urlpatterns = [path("ws/inference/", GenerateConsumer.as_asgi())]
