from typing import Any

from django.core.management.base import BaseCommand, CommandError

from conversations import services
from letta_gateway import LettaError, get_gateway


class Command(BaseCommand):
    help = "Pull the agents from the Letta server into lettachat (staff choose which users see)."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            agents = services.agent_sync(gateway=get_gateway())
        except LettaError as exc:
            raise CommandError(f"Could not reach Letta: {exc}") from exc
        for agent in agents:
            seen = "visible to users" if agent.visible_to_users else "hidden"
            self.stdout.write(f"{agent.letta_id}  {agent.name}  ({seen})")
        self.stdout.write(self.style.SUCCESS(f"{len(agents)} agent(s) synced."))
