"""ASGI entry point: HTTP through Django, websockets through Channels.

Run with ``daphne lettachat.asgi:application`` or
``gunicorn lettachat.asgi:application -k uvicorn_worker.UvicornWorker`` (README "Production").
"""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lettachat.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from chat.origins import SameOriginValidator  # noqa: E402
from chat.routing import websocket_urlpatterns  # noqa: E402
from conversations.relay import reaper  # noqa: E402
from letta_gateway import get_gateway  # noqa: E402
from lettachat import shutdown  # noqa: E402
from lettachat.request_log import websocket_logged  # noqa: E402

# Build the gateway (and import letta-client, seconds of work) now, while the server starts,
# not inside the first request on the event loop: a readiness probe there timed out.
get_gateway()
# Everything loaded so far (Django, the SDK and its models: most of the process's objects) lives
# as long as the process: out of the garbage collector's way. Its full collections, which stop
# the whole process, went from up to 131 ms to 35 ms with 50 replies streaming
# (bench/RESULTS.md, 2026-12-05).
gc.freeze()

router = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # The Origin must be this site exactly: scheme, host and port (chat/origins.py).
        "websocket": websocket_logged(
            SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
        ),
    }
)


async def application(scope, receive, send):  # type: ignore[no-untyped-def]
    """The router, with the process's background work started on the first call: the reaper
    that takes over replies whose process died (conversations/relay/reaper.py), and the
    graceful shutdown on SIGTERM (lettachat/shutdown.py)."""
    if scope["type"] in ("http", "websocket"):
        reaper.ensure_running()
        shutdown.install()
    return await router(scope, receive, send)
