"""`python -m tools.train` trains in a child process and waits for it, so that a trainer's death
is recorded: Caffe aborts the whole process on a failed CHECK (SIGABRT) and nothing in it can
write the manifest then, nor can a trainer killed by any other signal (out of memory: SIGKILL).
This parent, which loads no Caffe, marks the run failed with Caffe's own last word (its fatal
glog line) and says so in one line; a rerun of the same command then resumes the run or starts
it over (tools/train_run_dir.py). A trainer that dies with its parent (the machine stops, both are
killed) leaves its manifest `running` with no process holding its lock: the next trainer marks
that one failed when it takes the lock.

The child's C-level stderr (glog) comes through a pipe to this process, which passes it on, save
glog's fatal line and the boilerplate around it, which its one line repeats. Its Python stderr (the
progress bar, the error lines) is the terminal itself, so the bar stays a bar. The child tells
this process which run directory it holds once it holds its lock. A signal sent to this process
(kill, SIGTERM from make or Slurm) is passed on; a Ctrl-C on the terminal reaches both
processes, so it is not passed a second time.
"""
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from core.locks import Busy, exclusive, lock_beside
from core.run_status import DONE, mark_failed, read_manifest

ENV = "MEDSR_TRAIN_SUPERVISED"  # in the child: "<its Python stderr's fd>,<its report fd>"
WATCHED = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}
# glog's fatal line: F<date> <time> <thread> <file:line>] <message> (LOG(FATAL), a failed CHECK)
GLOG_FATAL = re.compile(r"^F\d{4,8} [\d:.]+\s+\d+ ([^\]]+)\] (.*)$")
GLOG_NOISE = ("WARNING: Logging before InitGoogleLogging() is written to STDERR",
              "*** Check failure stack trace: ***")
_report_fd = None  # in the child: where report_run_dir writes


def supervise_unless_supervised(module):
    """In the process the user started: run ``python -m module`` with the same arguments as a
    supervised child and exit with what ``supervise`` returns. In that child: set it up, return."""
    fds = os.environ.pop(ENV, None)
    if fds is not None:
        _become_child(fds)
        return
    sys.exit(supervise([sys.executable, "-m", module, *sys.argv[1:]]))


def _become_child(fds):
    global _report_fd
    stderr_fd, _report_fd = (int(fd) for fd in fds.split(","))
    sys.stderr = open(stderr_fd, "w", buffering=1, encoding=sys.stderr.encoding,
                      errors="backslashreplace")
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})  # the parent's mask, inherited


def report_run_dir(run_dir):
    """Tell the supervising parent, if there is one, which run directory this trainer holds."""
    if _report_fd is not None:
        os.write(_report_fd, os.fsencode(str(run_dir)) + b"\0")


class CaffeLines(threading.Thread):
    """Passes the child's C-level stderr on, line by line, and keeps glog's fatal message."""

    def __init__(self, fd):
        super().__init__(daemon=True)
        self.fd, self.fatal = fd, None

    def run(self):
        with open(self.fd, "rb") as pipe:
            for raw in pipe:
                line = raw.decode(errors="replace").rstrip("\r\n")
                fatal = GLOG_FATAL.match(line)
                if fatal:  # the process dies next: its reason goes into our one line
                    self.fatal = f"{fatal.group(2).strip()} ({fatal.group(1)})"
                elif not (line in GLOG_NOISE or (self.fatal and line.lstrip().startswith("@ "))):
                    try:
                        os.write(2, raw)
                    except OSError:  # our stderr is gone: keep draining the child's
                        pass


def supervise(command):
    """Run ``command`` (the trainer) and return its exit status; if a signal killed it, record its
    run as failed (died) and return 1 (128 + the signal for SIGINT and SIGTERM)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)  # taken below with sigtimedwait, in order
    err_read, err_write = os.pipe()
    report_read, report_write = os.pipe()
    stderr_copy = os.dup(2)
    try:
        child = subprocess.Popen(command, stderr=err_write, pass_fds=(stderr_copy, report_write),
                                 env={**os.environ, ENV: f"{stderr_copy},{report_write}"})
    finally:
        for fd in (err_write, report_write, stderr_copy):
            os.close(fd)
    lines = CaffeLines(err_read)
    lines.start()
    while child.poll() is None:
        info = signal.sigtimedwait(WATCHED, 1.0)
        # si_code > 0: sent by the kernel, as the terminal sends Ctrl-C to every process of the
        # foreground group, the child included; a process's kill() has si_code <= 0
        if info is not None and info.si_signo != signal.SIGCHLD and not (
                info.si_signo == signal.SIGINT and info.si_code > 0):
            child.send_signal(info.si_signo)
    lines.join(timeout=10)
    with open(report_read, "rb") as report:
        reported = [p for p in report.read().split(b"\0") if p]
    if child.returncode >= 0:
        return child.returncode
    return died(Path(os.fsdecode(reported[-1])) if reported else None, -child.returncode, lines.fatal)


def died(run_dir, signum, fatal):
    """The one line for a trainer killed by ``signum`` (Caffe's ``fatal`` line, if it printed
    one), its run marked failed; the exit status."""
    name = signal.Signals(signum).name
    reason = f"Caffe aborted: {fatal}" if fatal else f"killed by {name}"
    status = 128 + signum if signum in (signal.SIGINT, signal.SIGTERM) else 1
    if run_dir is None:
        return _say(f"train: error: the trainer died before it took its run ({reason})", status)
    try:
        with exclusive(lock_beside(run_dir), "train (recording its trainer's death)", run_dir):
            manifest = read_manifest(run_dir)
            if manifest is None or manifest.get("status") == DONE:  # nothing of it was lost
                state = manifest.get("status") if manifest else "none"
                return _say(f"train: error: the trainer died ({reason}); {run_dir}'s manifest says "
                            f"{state}, as the trainer left it", status)
            mark_failed(run_dir, manifest, reason)  # training, or taking up a stopped run
    except Busy:  # a new trainer holds the run already: it takes up the run as it finds it
        return _say(f"train: error: the trainer died ({reason}); {run_dir} is held by another "
                    f"trainer now", status)
    except OSError as exc:
        return _say(f"train: error: the trainer died ({reason}); its run {run_dir} could not be "
                    f"marked failed ({exc.strerror}: {exc.filename})", 1)
    return _say(f"train: error: the trainer died after iteration {manifest['iterations_done']} ({reason}); "
                f"{run_dir} is marked failed: the same command again resumes it from its last "
                f"snapshot or starts it over", status)


def _say(line, status):
    print(line, file=sys.stderr)
    return status
