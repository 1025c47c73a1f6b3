"""The shared secret a client must present: a random token in a file only its owner can read."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def default_config_dir() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "marionette"


def default_token_file() -> Path:
    return default_config_dir() / "token"


def default_store() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "marionette" / "jobs"


def load_or_create_token(path: Path) -> str:
    """Read the token, creating it (mode 0600, 256 random bits) on first start."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it just now
        else:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_hex(32) + "\n")
    token = path.read_text().strip()
    if not token:
        raise ValueError(f"the token file {path} is empty; delete it and a new one is made")
    return token
