"""Ray's authentication token file, readable by its owner only.

Ray 2.60 writes a new local cluster's token to ``~/.ray/auth_token`` with the process
umask (0644 by default), so on a shared machine every other user can read the token and
run code on the private Ray we start. Before starting one we create the file ourselves
with mode 0600 (Ray then reads it instead of writing its own), or tighten an existing file
of ours that others can read.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

logger = logging.getLogger(__name__)

TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
MODE_ENV = "RAY_AUTH_MODE"


def token_path() -> Path:
    """Where Ray looks for the token: ``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``."""
    configured = os.environ.get(TOKEN_PATH_ENV)
    return Path(configured) if configured else Path.home() / ".ray" / "auth_token"


def protect_auth_token() -> Path | None:
    """Make sure the token a private Ray will use is a file only its owner can read.

    Returns the file, or None when no file is involved (token in the environment, or token
    authentication turned off by the user).
    """
    if os.environ.get(TOKEN_ENV) or os.environ.get(MODE_ENV, "token").lower() != "token":
        return None
    path = token_path()
    try:
        info = path.stat()
    except FileNotFoundError:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it meanwhile
            return protect_auth_token()
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))  # 256 bits, as Ray's own generator makes
        logger.debug("Created the Ray token file %s (mode 0600)", path)
        return path
    if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o600)
        logger.info("Ray's token file %s was readable by others; it is now mode 0600", path)
    return path
