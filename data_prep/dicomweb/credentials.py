"""The PACS credentials: never on a command line, never in a message. The file named by
MEDSR_PACS_CREDENTIALS (one line ``user:password``, readable by its owner alone, as `make pacs-up`
writes it), else MEDSR_PACS_USER and MEDSR_PACS_PASSWORD, else none (anonymous)."""
import os
import stat
from pathlib import Path

from .errors import PacsError

__all__ = ["ENV_URL", "ENV_CREDENTIALS", "ENV_USER", "ENV_PASSWORD", "read_credentials",
           "credentials_from_env"]

ENV_URL = "MEDSR_PACS_URL"
ENV_CREDENTIALS = "MEDSR_PACS_CREDENTIALS"
ENV_USER = "MEDSR_PACS_USER"
ENV_PASSWORD = "MEDSR_PACS_PASSWORD"


def read_credentials(path):
    """(user, password) from a file of one line ``user:password``; PacsError naming the file
    (never its content) when it is missing, readable by others or not of that form."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as exc:
        raise PacsError(f"{path}: cannot read the PACS credentials ({exc.strerror})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PacsError(f"{path}: the PACS credentials are open to other users (mode "
                        f"{stat.S_IMODE(mode):03o}): chmod 600 it")
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != 1 or ":" not in lines[0] or not lines[0].split(":", 1)[0]:
        raise PacsError(f"{path}: the PACS credentials file must hold one line, user:password")
    user, password = lines[0].strip().split(":", 1)
    return user, password


def credentials_from_env(env=None):
    """(user, password) from MEDSR_PACS_CREDENTIALS, else MEDSR_PACS_USER/MEDSR_PACS_PASSWORD,
    else (None, None): anonymous."""
    env = os.environ if env is None else env
    if env.get(ENV_CREDENTIALS):
        return read_credentials(env[ENV_CREDENTIALS])
    if env.get(ENV_USER):
        return env[ENV_USER], env.get(ENV_PASSWORD, "")
    return None, None
