"""The staff console: the Django admin over the mirror, with the staff app's own records.

Mirrored data (agents, conversations, runs) is read-only here except for what staff own; writes
go through the same services as the page, Letta first. Each part has its module; importing them
here registers them with the admin.
"""

from staff import (  # noqa: F401
    admin_people,  # agents (sharing modes, memory blocks) and people (their data)
    approval_admin,  # agents' requests to use a tool: pending ones, denied by staff
    audit_admin,  # the audit log
    conversation_admin,  # conversations and their transcripts
    run_admin,  # runs
    usage_admin,  # usage and its CSV
)
