"""What a server process sets up as it loads the app (lettachat/asgi.py): what it loaded is kept
out of the garbage collector's way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOAD = "import gc, json, lettachat.asgi; print(json.dumps({'frozen': gc.get_freeze_count()}))"


def server_process() -> dict:
    """A process that has loaded the ASGI app, as daphne and uvicorn do: how many of its objects
    are frozen (left alone by the garbage collector)."""
    done = subprocess.run(
        [sys.executable, "-c", LOAD],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "lettachat.settings"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_what_the_app_loaded_is_out_of_the_garbage_collectors_way():
    # Django, the SDK and its models: far more than a bare interpreter's few thousand objects.
    assert server_process()["frozen"] > 100_000
