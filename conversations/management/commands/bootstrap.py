"""Make a fresh installation usable: agents synced, a demo agent (local server), a first login."""

import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from conversations import services
from letta_gateway import LettaError, get_gateway


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--demo-agent-model",
            default="",
            help="On a local Letta server: the model handle for a demo agent, made if no agent "
            "is visible to users.",
        )
        parser.add_argument(
            "--url", default="http://127.0.0.1:8000/", help="Where the app will be served."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        gateway = get_gateway()
        try:
            if options["demo_agent_model"]:
                demo = services.agent_ensure_demo(
                    gateway=gateway, model=options["demo_agent_model"]
                )
                if demo is not None:
                    self.stdout.write(f"Demo agent ready: {demo.name} ({demo.letta_id})")
            agents = services.agent_sync(gateway=gateway)
        except LettaError as exc:
            raise CommandError(
                f"Could not reach Letta at {settings.LETTA_BASE_URL}: {exc}"
            ) from exc
        visible = [a.name for a in agents if a.visible_to_users]
        self.stdout.write(
            f"{len(agents)} agent(s) on Letta; visible to users: {', '.join(visible) or 'none'}"
        )
        self._first_login(options["url"])

    def _first_login(self, url: str) -> None:
        credentials = Path(settings.VAR_DIR) / "first-login.txt"
        user_model = get_user_model()
        if not user_model.objects.exists():
            password = secrets.token_urlsafe(12)
            user_model.objects.create_superuser("admin", "", password)
            credentials.parent.mkdir(parents=True, exist_ok=True)
            credentials.write_text(f"admin\n{password}\n")
            credentials.chmod(0o600)
        if credentials.exists():
            username, password = credentials.read_text().split()[:2]
            self.stdout.write(
                self.style.SUCCESS(
                    f"\nLog in at {url} as {username} with password {password}\n"
                    f"(kept in {credentials}; delete that file once you have changed it)."
                )
            )
        else:
            self.stdout.write(
                self.style.SUCCESS(
                    f"\nLog in at {url} with your account "
                    "(make one with: uv run manage.py createsuperuser)."
                )
            )
