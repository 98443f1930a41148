from django.apps import AppConfig


class ChatConfig(AppConfig):
    """The web: pages, the conversation websocket, and the fragments both render."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "chat"

    def ready(self) -> None:
        from chat import sessions  # noqa: F401  (connects the signals that end sockets)
        from chat.websink import WebSink
        from conversations import sinks

        sinks.register(WebSink())  # every tab hears every conversation event of this process
