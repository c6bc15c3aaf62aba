from django.urls import path

from apps.tokenization.consumers import TokenizerConsumer

websocket_urlpatterns = [path("ws/tokenization/tokenizer/<int:tokenizer_id>/", TokenizerConsumer.as_asgi())]
