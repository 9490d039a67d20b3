"""Ray token authentication (Ray 2.60 turns it on by default) and job detection."""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: Set by the Ray Jobs supervisor in a job's driver process.
JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
#: Ray's token sources, in Ray's order: the token itself, a file, the default file.
TOKEN_ENV, TOKEN_PATH_ENV = "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"
DEFAULT_TOKEN_PATH = Path("~/.ray/auth_token")
AUTH_MODE_ENV = "RAY_AUTH_MODE"


def in_ray_job() -> bool:
    """Whether this process is a Ray job's driver (``gradsweep submit``)."""
    return JOB_ENV in os.environ


def auth_token() -> str | None:
    """The Ray token this client would send: $RAY_AUTH_TOKEN, its path, ~/.ray/auth_token."""
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV].strip()
    path = Path(os.environ.get(TOKEN_PATH_ENV) or DEFAULT_TOKEN_PATH).expanduser()
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def enable_token_auth() -> bool:
    """Turn on Ray token authentication for this process when a token exists.

    Ray 2.60 enables it on its own only for a cluster it finds locally; an
    explicit address needs ``RAY_AUTH_MODE=token`` before ``ray.init``. An
    explicit ``RAY_AUTH_MODE`` is left alone. Returns whether it is on.
    """
    mode = os.environ.get(AUTH_MODE_ENV)
    if mode is not None:
        return mode.lower() == "token"
    if auth_token() is None:
        return False
    os.environ[AUTH_MODE_ENV] = "token"
    ray = sys.modules.get("ray")
    if ray is not None and not ray.is_initialized():
        from ray._raylet import Config  # refresh Ray's cached mode, as Ray itself does

        Config.initialize("")
    return True


#: The logger of Ray's "Token authentication is enabled" notice (Ray 2.60).
TOKEN_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"


def quiet_token_notice() -> None:
    """Silence Ray's "Token authentication is enabled" warning, printed by every
    ``ray.init`` (auth is on, as intended); errors of that logger still show."""
    import logging

    logging.getLogger(TOKEN_NOTICE_LOGGER).setLevel(logging.ERROR)
