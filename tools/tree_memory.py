"""A command's wall time and the peak memory of its whole process tree (Linux /proc).

getrusage's ru_maxrss is the peak of ONE process (for RUSAGE_CHILDREN: the largest child's), so a
build that forks workers can use several times it at once. Here the command's tree (the command
and every process under it, found by parent pid in /proc/*/stat) is sampled every ``interval``
seconds and its members' memory summed:

- ``peak_rss_tree``: the largest sum of resident set sizes. Pages that forked workers share with
  their parent (libraries, numpy) are counted once per process: an upper bound;
- ``peak_pss_tree``: the largest sum of proportional set sizes (a shared page split among its
  sharers): what the tree takes from the machine;
- ``peak_rss_process``: the largest single process's own peak (VmHWM, kept by the kernel, read
  at each sample): what getrusage's ru_maxrss would say, without what it inherits (Linux carries
  the forking parent's peak into a child's ru_maxrss across exec, so a benchmark's own size would
  show up as its command's);
- ``hwm_sum``: the sum of every tree member's VmHWM, an upper bound of the tree's true peak
  (members peak at different times) that no short peak escapes.

``cpu_s`` is the CPU time (user + system) of the command and every descendant it waited for
(getrusage(RUSAGE_CHILDREN) before and after): on a machine shared with other work, wall time
says what the command got, CPU time what it needed.

A peak shorter than ``interval`` can fall between two samples: the sampled sums are lower bounds
of the true ones at that resolution, ``hwm_sum`` an upper bound.
"""
import resource
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


def parent_pids():
    """{pid: parent pid} of every process now (those that end while read are left out)."""
    parents = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])  # after "(comm)"
    return parents


def tree_pids(root):
    """``root`` and every process under it, now."""
    children = {}
    for pid, parent in parent_pids().items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def status_bytes(pid, keys=("VmRSS", "VmHWM")):
    """{key: bytes} of /proc/<pid>/status's ``keys`` (0 for a process that ended meanwhile)."""
    found = dict.fromkeys(keys, 0)
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in found:
                found[key] = int(value.split()[0]) * 1024  # "kB"
    except (OSError, IndexError, ValueError):
        pass
    return found


def pss_bytes(pid):
    try:
        for line in (PROC / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


class TreeSampler(threading.Thread):
    """Samples the tree under ``root`` until stop(); peaks in bytes."""

    def __init__(self, root, interval):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak_rss = self.peak_pss = self.peak_processes = self.samples = 0
        self.hwm = {}  # pid: its VmHWM when last seen
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            pids = tree_pids(self.root)
            status = {pid: status_bytes(pid) for pid in pids}
            self.peak_rss = max(self.peak_rss, sum(s["VmRSS"] for s in status.values()))
            for pid, s in status.items():
                self.hwm[pid] = max(self.hwm.get(pid, 0), s["VmHWM"])
            self.peak_pss = max(self.peak_pss, sum(map(pss_bytes, pids)))
            self.peak_processes = max(self.peak_processes, len(pids))
            self.samples += 1
            self._stop_event.wait(self.interval)

    def stop(self):
        self._stop_event.set()
        self.join()


@dataclass
class Measured:
    """What run_measured saw of one command (bytes, seconds)."""

    returncode: int
    wall_s: float
    first_line_s: float  # first line on stdout (None: none)
    peak_rss_tree: int
    peak_pss_tree: int
    peak_rss_process: int
    hwm_sum: int
    cpu_s: float
    peak_processes: int
    samples: int


def run_measured(cmd, env, log, interval=0.1, cwd=None):
    """Run ``cmd`` with stdout and stderr into the file ``log``; its Measured. The command should
    not buffer its stdout (PYTHONUNBUFFERED=1) for ``first_line_s`` to mean when it printed."""
    before = _children_cpu()
    with open(log, "w") as out:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=out,
                                text=True)
        sampler = TreeSampler(proc.pid, interval)
        sampler.start()
        first = []
        reader = threading.Thread(target=_copy_lines, args=(proc.stdout, out, first, start),
                                  daemon=True)
        reader.start()
        try:
            proc.wait()
        except BaseException:
            proc.terminate()  # an interrupt: the command cleans up after SIGTERM, then ends
            proc.wait()
            raise
        finally:
            sampler.stop()
        wall = time.monotonic() - start
        reader.join()
    hwm = sampler.hwm.values()
    return Measured(proc.returncode, wall, first[0] if first else None, sampler.peak_rss,
                    sampler.peak_pss, max(hwm, default=0), sum(hwm), _children_cpu() - before,
                    sampler.peak_processes, sampler.samples)


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _copy_lines(stream, out, first, start):
    for line in stream:
        if not first:
            first.append(time.monotonic() - start)
        out.write(line)
        out.flush()
