"""A real Letta server (letta==0.16.8) on loopback for lettachat's tests and dev runs.

See ``harness`` for the API and environment variables, ``fake_model`` for the scripted model.
The names below are loaded lazily so that ``python -m devtools.local_letta.fake_model`` does
not import the harness first.
"""

from __future__ import annotations

__all__ = [
    "EMBEDDING",
    "LETTA_VERSION",
    "MODEL_HANDLE",
    "MODEL_ID",
    "Config",
    "HarnessError",
    "base_url",
    "config",
    "install",
    "is_healthy",
    "is_installed",
    "model_handle",
    "restart_letta",
    "start",
    "start_letta",
    "status",
    "stop",
    "stop_letta",
]


def __getattr__(name: str):
    if name in __all__:
        from . import harness

        return getattr(harness, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
