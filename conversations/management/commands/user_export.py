"""Export everything lettachat holds of one person as a zip (what "Export my data" gives them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from conversations import exports
from letta_gateway import LettaError, get_gateway


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="Whose data.")
        parser.add_argument(
            "--output",
            "-o",
            help="Where to write the zip (default: lettachat-USERNAME-DATE.zip here).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = _user(options["username"])
        path = Path(
            options["output"]
            or f"lettachat-{user.get_username()}-{timezone.now():%Y%m%d-%H%M%S}.zip"
        )
        partial = path.with_name(path.name + ".partial")
        try:
            with partial.open("wb") as out:
                count = exports.user_export_zip(gateway=get_gateway(), user=user, out=out)
        except LettaError as exc:
            partial.unlink(missing_ok=True)
            raise CommandError(
                f"Could not read the memory of {user.get_username()}'s agents from Letta: {exc}. "
                "Nothing was written."
            ) from exc
        partial.replace(path)
        self.stdout.write(
            self.style.SUCCESS(
                f"{count} conversation(s) of {user.get_username()} written to {path}"
            )
        )


def _user(username: str) -> Any:
    try:
        return get_user_model().objects.get_by_natural_key(username)
    except get_user_model().DoesNotExist as exc:
        raise CommandError(f"No user {username!r}.") from exc
