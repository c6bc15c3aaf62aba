from django.urls import path

from apps.corpora.consumers import CorpusConsumer

websocket_urlpatterns = [path("ws/corpora/corpus/<int:corpus_id>/", CorpusConsumer.as_asgi())]
