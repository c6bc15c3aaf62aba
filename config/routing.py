"""Every app's websocket routes, each under ws/<app>/."""

from apps.system.routing import websocket_urlpatterns as system_ws

websocket_urlpatterns = [*system_ws]
