"""One writer at a time: an exclusive lock on a file, held while a trainer owns its run directory,
a grid owns a runs/ tree, or data_prep builds a data set.

The lock is the kernel's (``flock``): it goes away when its holder dies, however it dies, so a
killed process never leaves a stale lock behind. The holder writes its pid and what it does into
the file, so whoever is refused can say who holds it. A holder's child processes see the lock in
MEDSR_LOCKS_HELD and do not ask for it again (``make reproduce`` runs ``make grid``).

    python -m core.locks FILE WHAT SUBJECT -- COMMAND ...   run COMMAND holding the lock on FILE
"""
import fcntl
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from core.errors import DataError

HELD = "MEDSR_LOCKS_HELD"  # os.pathsep-separated lock files that this process's parents hold


class Busy(DataError):
    """Another process holds the lock: one line naming it."""


def lock_beside(path):
    """The lock file of a directory (a run, a data set): a hidden file beside it, so that
    replacing or deleting the directory never removes the lock of whoever holds it."""
    path = Path(path).resolve()
    return path.parent / f".{path.name}.lock"


def _held_by_parent(path):
    return str(path) in os.environ.get(HELD, "").split(os.pathsep)


@contextmanager
def exclusive(path, what, subject):
    """Hold the lock on ``path`` (created with its parent folders if need be) while inside; Busy
    if another process holds it. ``what`` says what the holder does and ``subject`` what it owns,
    for the line of whoever is refused."""
    path = Path(path).resolve()
    if _held_by_parent(path):
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            raise Busy(f"{subject} is in use by {holder} (its lock: {path})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({what})".encode(), 0)
        previous = os.environ.get(HELD)
        os.environ[HELD] = os.pathsep.join(filter(None, [previous, str(path)]))
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(HELD, None)
            else:
                os.environ[HELD] = previous
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def run_holding(path, what, subject, command):
    """Run ``command`` while holding the lock; its exit status. Ctrl-C reaches the command from
    the terminal, and a SIGTERM sent here is passed on to it."""
    with exclusive(path, what, subject):
        child = subprocess.Popen(command, close_fds=False)  # make -j's jobserver pipes too
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda signum, _frame: child.send_signal(signum))
        return child.wait()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 5 or argv[3] != "--":
        print("usage: python -m core.locks FILE WHAT SUBJECT -- COMMAND ...", file=sys.stderr)
        return 2
    path, what, subject, command = argv[0], argv[1], argv[2], argv[4:]
    try:
        return run_holding(path, what, subject, command)
    except Busy as e:
        print(f"{what}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
