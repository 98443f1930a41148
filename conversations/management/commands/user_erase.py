"""Delete everything of one person, in Letta and here: their conversations, their own agents, and
their name on Letta. Resumable: if Letta fails half-way it stops, says what is left, and deletes
nothing here that still exists in Letta; run it again to finish."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from conversations import personal_data
from conversations.management.commands.user_export import _user
from conversations.models import Agent, Conversation
from letta_gateway import get_gateway


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="Whose data.")
        parser.add_argument(
            "--yes", action="store_true", help="Do not ask for confirmation (for scripts)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = _user(options["username"])
        name = user.get_username()
        conversations = Conversation.objects.filter(owner=user).count()
        agents = Agent.objects.filter(owner=user).count()
        self.stdout.write(
            f"{name}: {conversations} conversation(s) and {agents} personal agent(s) will be "
            "deleted in Letta and here. This cannot be undone."
        )
        if not options["yes"]:
            answer = input(f"Type {name} to confirm: ")
            if answer.strip() != name:
                raise CommandError("Not confirmed: nothing was deleted.")
        total = conversations + agents
        done = 0

        def progress(kind: str, letta_id: str) -> None:
            nonlocal done
            done += 1
            self.stdout.write(f"  [{done}/{total}] deleted {kind} {letta_id}")

        report = personal_data.user_erase(gateway=get_gateway(), user=user, on_progress=progress)
        if report.shared_agents:
            self.stdout.write(
                "Not erasable here: what they told shared agents may be in those agents' memory ("
                + ", ".join(report.shared_agents)
                + "); edit or clear it in the admin."
            )
        if not report.done:
            raise CommandError(
                f"Stopped: {report.error or 'unfinished'}. Deleted {report.conversations_deleted} "
                f"conversation(s) and {report.agents_deleted} agent(s); left: "
                f"{len(report.conversations_left)} conversation(s) "
                f"{' '.join(report.conversations_left)}, {len(report.agents_left)} agent(s) "
                f"{' '.join(report.agents_left)}. Nothing still in Letta was deleted here: run "
                "the command again to finish."
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"Deleted {report.conversations_deleted} conversation(s) and "
                f"{report.agents_deleted} agent(s) of {name}; nothing of theirs is left in Letta "
                "or here."
            )
        )
