import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()  # before importing consumers: it sets Django up

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from config.routing import websocket_urlpatterns  # noqa: E402



def _answer_overlong_request_lines() -> None:
    """Under daphne, Twisted drops a connection whose request line (or a header) is over 16 kB without a word: a
    30 kB explorer link just failed. Answer 414 with a reason instead. (Share links now keep long texts on the server,
    so only old or hand-made links get here.)"""
    try:
        from twisted.web.http import HTTPChannel
    except ImportError:  # another ASGI server: it answers for itself
        return

    def lineLengthExceeded(self, line):
        self.transport.write(b"HTTP/1.1 414 URI Too Long\r\nContent-Type: text/plain; charset=utf-8\r\n"
                             b"Connection: close\r\n\r\nThe address (or a header) is over 16 kB, longer than this "
                             b"server reads. Explorer links with long texts: open the explorer, paste the text, and "
                             b"copy the short link it makes.\n")
        self.loseConnection()

    HTTPChannel.lineLengthExceeded = lineLengthExceeded


_answer_overlong_request_lines()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
