from django.apps import AppConfig


class ChatConfig(AppConfig):
    """The web: pages, the conversation websocket, and the fragments both render."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "chat"
