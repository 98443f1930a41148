"""Chat with a Letta agent in the terminal, as a lettachat user.

    manage.py chat --user NAME [--agent ID]

The same agents, conversations, ownership rules and replies as the page (see ``terminal``):
NAME sees the agents staff made visible and only their own conversations; on a personal agent
their conversations go to their own copy of it. /help lists the commands. Logs go to
``var/chat.log``, not to the terminal.
"""

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from rich.console import Console

from conversations import selectors
from terminal.interrupt import ctrl_c
from terminal.session import ChatSession, log_to_file


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, help="The username to chat as.")
        parser.add_argument("--agent", default="", help="The agent to talk to (its Letta id).")

    def execute(self, *args: Any, **options: Any) -> str | None:
        # Ctrl-C is taken by a thread of its own and given to the chat's main thread
        # (``terminal.interrupt``): installed before anything starts a thread (the database pool
        # does), so that every thread inherits the hold on SIGINT.
        ctrl_c.install()
        return super().execute(*args, **options)

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model()
        user = users.objects.filter(**{users.USERNAME_FIELD: options["user"]}).first()
        if user is None or not user.is_active:
            raise CommandError(f"No active user {options['user']!r}.")
        agent = None
        if options["agent"]:
            agent = selectors.agent_get_visible(letta_id=options["agent"])
            if agent is None:
                raise CommandError(
                    f"No agent {options['agent']!r} that {options['user']} may talk to "
                    "(the agents staff made visible: /agents in the chat lists them)."
                )
        log_to_file(settings.VAR_DIR / "chat.log")
        ChatSession(user=user, agent=agent, console=Console(highlight=False)).run()
