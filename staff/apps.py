from django.apps import AppConfig


class StaffConfig(AppConfig):
    """The staff console: the Django admin over the mirror."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "staff"
