"""Every app's websocket routes, each under ws/<app>/, and a quiet refusal for any other path."""

from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import re_path

from apps.arena.routing import websocket_urlpatterns as arena_ws
from apps.corpora.routing import websocket_urlpatterns as corpora_ws
from apps.evals.routing import websocket_urlpatterns as evals_ws
from apps.explorer.routing import websocket_urlpatterns as explorer_ws
from apps.inference.routing import websocket_urlpatterns as inference_ws
from apps.system.routing import websocket_urlpatterns as system_ws
from apps.tokenization.routing import websocket_urlpatterns as tokenization_ws
from apps.training.routing import websocket_urlpatterns as training_ws


class UnknownPath(AsyncWebsocketConsumer):
    """A handshake to a path no app serves: refused (HTTP 403 during the handshake), as an unknown page is a 404,
    instead of URLRouter's ValueError and a traceback in the server's log."""

    async def connect(self):
        await self.close()


websocket_urlpatterns = [*system_ws, *corpora_ws, *tokenization_ws, *explorer_ws, *training_ws, *inference_ws,
                         *arena_ws, *evals_ws, re_path(r"", UnknownPath.as_asgi())]
