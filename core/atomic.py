"""Atomic file writes: a reader never sees a half-written file, a crash leaves no partial output.

A temporary is named ``.<name>.<pid>.<host>-<random>.tmp`` beside the ``<name>`` it becomes: hidden,
and saying which process of which machine made it. A process killed outright (SIGKILL, a power
cut) cannot remove its own; the next write of the same ``<name>`` removes those whose process on
this machine is gone (:func:`remove_stale`)."""
import ctypes
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
from contextlib import ExitStack, contextmanager
from pathlib import Path

# This machine in a temporary's name: a pid says nothing of another machine's processes (a folder
# shared by the nodes of a cluster), so only this machine's dead temporaries are removed.
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_swept = set()  # the names this process has removed stale temporaries of: once each


def _temp_name(beside):
    """A temporary name beside ``beside``: hidden, this process's (its pid and machine) and random."""
    beside = Path(beside)
    return beside.parent / f".{beside.name}.{os.getpid()}.{_HOST}-{secrets.token_hex(4)}.tmp"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale(beside):
    """Remove the temporaries of ``beside`` that a process of this machine left when it was
    killed (its pid no longer runs); returns their paths. Once per name and process: a process
    that writes one file many times looks once."""
    beside = Path(beside)
    key = str(beside.absolute())
    if key in _swept:
        return []
    _swept.add(key)
    prefix = f".{beside.name}."
    pattern = re.compile(re.escape(prefix) + rf"(\d+)\.{_HOST}-[0-9a-f]{{8}}\.tmp")
    removed = []
    try:
        entries = [e for e in os.scandir(beside.parent) if e.name.startswith(prefix)]
    except OSError:
        return removed
    for entry in entries:
        found = pattern.fullmatch(entry.name)
        if found and int(found[1]) != os.getpid() and not _alive(int(found[1])):
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _naming(dest, tmp, exc):
    """``exc`` (an OSError) naming ``dest``, the user's name, where it names no file or only the
    temporary: a write() that finds the disk full names none, and the temporary is gone after."""
    named = exc.filename
    if named is not None and not str(named).startswith(str(tmp)):
        return exc
    return OSError(exc.errno, exc.strerror or str(exc), str(dest))


@contextmanager
def _temporary(beside, make, remove):
    """Yield a temporary that ``make(name)`` creates beside ``beside`` (O_EXCL-like: a name made
    elsewhere is passed over), ``remove``d at the end whatever happens. The name is chosen before
    it is made, so the cleanup knows it whenever an interrupt lands (Ctrl-C, or SIGTERM through
    core.cli). A missing folder above ``beside`` is created, as ``mkdir -p`` does; the stale
    temporaries of ``beside`` go first (:func:`remove_stale`). An OSError that names no file
    names ``beside``."""
    Path(beside).parent.mkdir(parents=True, exist_ok=True)
    remove_stale(beside)
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
    except OSError as exc:
        named = _naming(beside, tmp, exc)
        if named is exc:
            raise
        raise named from exc
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


def json_text(obj):
    """``obj`` as the indented JSON text the writers here write."""
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"


def write_json_atomic(path, obj):
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json_text(obj))


def write_texts_atomic(texts):
    """Write each ``{path: text}`` through a temporary beside it, and rename them all into place
    once every one is written: files that go together (eval's three tables) appear together, and
    a failure at any of them (a disk that fills up at the second) leaves none of them new."""
    with ExitStack() as stack:
        for path, text in texts.items():
            stack.enter_context(atomic_path(path)).write_text(text)


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
