"""The trainer's progress bar and its step timing (`python -m tools.train`): how the bar draws on
a terminal and in a log, each step's time as `make bench` times it, and the run's ms/iteration."""
import collections
import os
import statistics
import sys
import time


class StepTimes:
    """Milliseconds of each training step of this process, timed as `make bench` times its steps
    (solver.step(1) and reading the loss): the manifest gets their median, the figure the bench
    reports. The run's ms/iteration is a mean over wall time, which this machine's scheduling
    noise drags above the median; only the most recent ``keep`` steps are kept."""

    def __init__(self, keep=100_000):
        self.times = collections.deque(maxlen=keep)

    def add(self, start):
        self.times.append((time.perf_counter() - start) * 1000.0)

    def summary(self):
        """{"median_ms", "mean_ms", "steps"} of the steps kept, or {} before the first."""
        if not self.times:
            return {}
        return {"median_ms": round(statistics.median(self.times), 3),
                "mean_ms": round(statistics.fmean(self.times), 3), "steps": len(self.times)}


class LineWriter:
    """A file for tqdm that turns each redraw into a line of its own: in a log file (Slurm, nohup)
    the redraws would otherwise be one line joined by carriage returns, and on a terminal that
    several runs share (``make -j2 grid``) they would overwrite one another."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        text = text.strip("\r\n")
        if text.strip():
            self.stream.write(text + "\n")

    def flush(self):
        self.stream.flush()


def progress_style(env=None, stream=None):
    """tqdm keywords for the training bar. On a terminal of its own it redraws in place 10 times
    a second; ``MEDSR_PROGRESS=lines`` (set by `make reproduce` for its parallel runs) or a stream
    that is not a terminal gets one line a minute (or every ``MEDSR_PROGRESS_S`` seconds), or a
    days-long run's log grows by ~1 KB/s."""
    env = os.environ if env is None else env
    stream = sys.stderr if stream is None else stream
    if env.get("MEDSR_PROGRESS", "bar") != "lines" and stream.isatty():
        return {"dynamic_ncols": True, "mininterval": 0.1}
    return {"file": LineWriter(stream), "ncols": 100,
            "mininterval": float(env.get("MEDSR_PROGRESS_S", 60))}


def step_ms(manifest):
    """Milliseconds per iteration over the whole run (resumed parts included), periodic tests left
    out; the manifest's wall time holds both."""
    steps = max(manifest["iterations_done"], 1)
    return 1000.0 * (manifest["wall_time_s"] - manifest.get("test_time_s", 0.0)) / steps
