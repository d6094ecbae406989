"""Atomic file writes: a reader never sees a half-written file, a crash leaves no partial output."""
import ctypes
import errno
import json
import os
import secrets
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path


def _temp_name(beside):
    """A temporary name beside ``beside``: hidden, this process's (its pid) and random."""
    beside = Path(beside)
    return beside.parent / f".{beside.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"


@contextmanager
def _temporary(beside, make, remove):
    """Yield a temporary that ``make(name)`` creates beside ``beside`` (O_EXCL-like: a name made
    elsewhere is passed over), ``remove``d at the end whatever happens. The name is chosen before
    it is made, so the cleanup knows it whenever an interrupt lands (Ctrl-C, or SIGTERM through
    core.cli)."""
    Path(beside).parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        while True:
            tmp = _temp_name(beside)
            try:
                make(tmp)
                break
            except FileExistsError:  # a dead process's of the same pid
                continue
        yield tmp
    finally:
        if tmp is not None:
            remove(tmp)


def _new_file(path):
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds,
    delete it if the block raises (an interrupt included, whenever it lands)."""
    with _temporary(path, _new_file, lambda tmp: tmp.unlink(missing_ok=True)) as tmp:
        yield tmp
        os.replace(tmp, path)


@contextmanager
def staging_dir(beside):
    """Yield a new empty folder beside ``beside`` (the same file system, so that what the block
    writes there can be renamed into place), removed with whatever is left in it at the end,
    whenever an interrupt lands."""
    # os.mkdir: 0777 less the umask, as a plain mkdir
    with _temporary(beside, os.mkdir, lambda tmp: shutil.rmtree(tmp, ignore_errors=True)) as tmp:
        yield tmp


@contextmanager
def atomic_dir(dest):
    """Yield a new empty folder beside ``dest``; it takes ``dest``'s place if the block succeeds
    and is removed if it raises: a reader sees the old folder or the whole new one."""
    with staging_dir(dest) as tmp:
        yield tmp
        replace_dir(tmp, dest)


def current_umask():
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path, text):
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path, obj):
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def replace_dir(new, dest):
    """Put directory ``new`` in the place of ``dest`` (which may not exist). A reader, or an
    interrupt, finds the old folder or the whole new one: the two are exchanged in one step
    (Linux's renameat2 RENAME_EXCHANGE), and ``new`` then holds the old one, removed here. Where
    the file system cannot exchange, the old one is moved aside and the new one in with the
    interrupt signals held off between the two renames."""
    new, dest = Path(new), Path(dest)
    if not dest.exists():
        os.replace(new, dest)
        return
    if _exchange(new, dest):
        shutil.rmtree(new, ignore_errors=True)
        return
    aside = _temp_name(dest)
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        os.replace(dest, aside)
        os.replace(new, dest)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        shutil.rmtree(aside, ignore_errors=True)


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # <fcntl.h>, <linux/fs.h>


def _exchange(a, b):
    """Swap two paths in one step; False where the C library or the file system cannot."""
    rename = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if rename is None:
        return False
    if rename(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))
