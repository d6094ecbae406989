"""What every command-line entry point does alike about the world outside it: a SIGTERM is an
interrupt (whatever cleans up after Ctrl-C cleans up after it too), a file system error is one
line naming the path and the cause, a usage error is one line too, and an output is checked for
writability before the work."""
import errno
import os
import signal
import sys
from pathlib import Path

from core.errors import DataError


def _interrupt(signum, _frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


INTERRUPTS = {signal.SIGINT, signal.SIGTERM}


def terminate_as_interrupt():
    """From now on SIGTERM raises KeyboardInterrupt, as Ctrl-C does: temporaries are removed by
    the same ``finally`` and ``except BaseException`` blocks (core.atomic). The main thread takes
    both signals again (exit_quietly_until_main held them off while libraries started theirs)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, INTERRUPTS)


def _exit_quietly(signum, _frame):
    sys.exit(128 + signum)


def exit_quietly_until_main():
    """Ctrl-C or SIGTERM while an entry point still imports (Caffe, OpenCV: seconds) exits with
    128 + the signal and no traceback, before anything was written (once the imports end: the
    signals are held off until then); its main() then calls terminate_as_interrupt. Call it
    first thing, under ``if __name__ == "__main__"``."""
    for s in INTERRUPTS:
        signal.signal(s, _exit_quietly)
    # The worker threads OpenBLAS and OpenMP start while loading inherit this thread's mask: with
    # the two held off there, the kernel hands them to the main thread, where Python acts on them
    # (one a worker took could go unnoticed by Python 3.11). Held until main() takes them back.
    signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)


def os_error_line(exc, where=None):
    """One line for an OSError: the path (the error's, else ``where``) and the cause (no space
    left, read-only, permission), without what a library appends (h5py: its whole error stack)."""
    place = exc.filename if exc.filename is not None else (where or "a file")
    why = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
    return f"cannot write {place}: {why}"


def check_writable(path, what="--out", into=False):
    """DataError unless ``path`` could be created there: the nearest folder that exists above it
    is a folder this process may write in, on a file system that is not read-only. ``into``:
    ``path`` is a folder that outputs go into, so the check starts at ``path`` itself."""
    path = Path(path)
    folder = path if into else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise DataError(f"{path}: {what} lies under {folder}, which is a file")
    if not os.access(folder, os.W_OK | os.X_OK):
        why = "a read-only file system" if _read_only(folder) else "no permission to write there"
        raise DataError(f"{path}: {what} cannot be written in {folder} ({why})")


def _read_only(folder):
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError as exc:
        return exc.errno == errno.EROFS


def guarded(prog, work, user_errors=(DataError,), left="", where=None):
    """``work()``'s exit status, with what can go wrong outside the program as one line each on
    stderr: a user's mistake (``user_errors``) or too little memory exits 2, a file system error
    (no space, read-only, permission; ``where`` names the place when the error does not) exits 1,
    Ctrl-C or SIGTERM exits 130. ``left`` ends the lines of what can stop the work midway (memory,
    the file system, an interrupt) with what was left behind, e.g. "; no output was written"."""
    try:
        terminate_as_interrupt()  # inside: one held off during the imports lands here
        return work()
    except user_errors as e:  # refused before any work
        return _fail(f"{prog}: error: {e}", 2)
    except MemoryError:
        return _fail(f"{prog}: error: out of memory{left}", 2)
    except OSError as e:
        return _fail(f"{prog}: error: {os_error_line(e, where)}{left}", 1)
    except KeyboardInterrupt:
        return _fail(f"{prog}: interrupted{left}", 130)


def _fail(line, status):
    print(line, file=sys.stderr)
    return status
