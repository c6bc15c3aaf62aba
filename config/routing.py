"""Every app's websocket routes, each under ws/<app>/."""

from apps.arena.routing import websocket_urlpatterns as arena_ws
from apps.corpora.routing import websocket_urlpatterns as corpora_ws
from apps.explorer.routing import websocket_urlpatterns as explorer_ws
from apps.inference.routing import websocket_urlpatterns as inference_ws
from apps.system.routing import websocket_urlpatterns as system_ws
from apps.tokenization.routing import websocket_urlpatterns as tokenization_ws
from apps.training.routing import websocket_urlpatterns as training_ws

websocket_urlpatterns = [*system_ws, *corpora_ws, *tokenization_ws, *explorer_ws, *training_ws, *inference_ws,
                         *arena_ws]
