from django.urls import path

from apps.arena.consumers import BattleConsumer

websocket_urlpatterns = [path("ws/arena/battles/<uuid:uid>/", BattleConsumer.as_asgi())]
