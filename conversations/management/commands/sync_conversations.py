"""Import a person's conversations that exist on Letta but not in lettachat, with their messages.

    manage.py sync_conversations --owner NAME [--agent AGENT_ID]

Letta does not know who a conversation belongs to: every conversation of the agent (without
``--agent``: of every shared agent and template lettachat knows, and of NAME's own copies) that
is not here yet becomes NAME's. Someone else's own copy of an agent is never imported for NAME.
Conversations already here are left as they are. Run ``manage.py sync_agents`` first for new
agents.
"""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Q

from conversations import sync
from conversations.models import Agent
from letta_gateway import LettaError, get_gateway


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--owner", required=True, help="Username the conversations go to.")
        parser.add_argument("--agent", default="", help="Only this agent's (its Letta id).")
        parser.add_argument(
            "--page-size",
            type=int,
            default=sync.PAGE,
            help="Conversations and messages asked of Letta per request.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model()
        try:
            owner = users.objects.get(**{users.USERNAME_FIELD: options["owner"]})
        except users.DoesNotExist as exc:
            raise CommandError(f"No user {options['owner']!r}.") from exc
        # Never someone else's own copy: what its conversations hold is theirs.
        agents = Agent.objects.filter(Q(owner__isnull=True) | Q(owner=owner))
        if options["agent"]:
            chosen = Agent.objects.filter(letta_id=options["agent"]).first()
            if chosen is None:
                raise CommandError(
                    f"lettachat does not know agent {options['agent']!r}: run "
                    "`manage.py sync_agents` first."
                )
            if chosen.owner_id is not None and chosen.owner_id != owner.pk:
                raise CommandError(
                    f"{chosen.letta_id} is another person's own copy of {chosen.origin.name}: "
                    "its conversations are theirs, not "
                    f"{owner.get_username()}'s."
                )
            agents = agents.filter(pk=chosen.pk)
        gateway = get_gateway()
        imported = skipped = messages = 0
        for agent in agents:
            self.stdout.write(f"{agent.name} ({agent.letta_id}):")
            try:
                result = sync.conversations_import(
                    gateway=gateway,
                    owner=owner,
                    agent=agent,
                    page=options["page_size"],
                    progress=lambda line: self.stdout.write(f"  {line}"),
                )
            except LettaError as exc:
                raise CommandError(
                    f"Letta failed while importing {agent.letta_id}: {exc} (what was imported "
                    "before stays; run the command again to go on)."
                ) from exc
            imported += len(result.imported)
            skipped += len(result.skipped)
            messages += result.messages
        self.stdout.write(
            self.style.SUCCESS(
                f"{imported} conversation(s) imported for {owner.get_username()} "
                f"({messages} messages); {skipped} already here."
            )
        )
