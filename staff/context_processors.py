"""What every page needs from the staff side: the notice that staff may read conversations."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def staff_notice(request: HttpRequest) -> dict[str, str]:
    return {"staff_notice": settings.LETTACHAT_STAFF_NOTICE}
