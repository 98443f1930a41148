"""ASGI entry point: HTTP through Django, websockets through Channels.

Run with ``daphne lettachat.asgi:application`` or
``gunicorn lettachat.asgi:application -k uvicorn_worker.UvicornWorker`` (README "Production").
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lettachat.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from chat.routing import websocket_urlpatterns  # noqa: E402
from letta_gateway import get_gateway  # noqa: E402
from lettachat.request_log import websocket_logged  # noqa: E402

# Build the gateway (and import letta-client, seconds of work) now, while the server starts,
# not inside the first request on the event loop: a readiness probe there timed out.
get_gateway()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": websocket_logged(
            AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
        ),
    }
)
