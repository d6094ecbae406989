"""A run's manifest and its status, readable without Caffe: the trainer's supervising process
(tools/supervisor.py) records a death with it, and the trainer reads it back at the next start.

    running   a trainer holds the run (its lock, core/locks.py), or died without a word
    done, interrupted, stopped, diverged   as the trainer left it (tools/train_loop.py)
    failed    its trainer died: a Caffe abort, a signal; ``failures`` says at which iteration and why
"""
import json
from datetime import datetime, timezone
from pathlib import Path

from core.atomic import write_json_atomic

RUNNING, FAILED, DONE = "running", "failed", "done"


def now():
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_manifest(run_dir):
    """The run's manifest, or None if there is none (or it is unreadable)."""
    try:
        return json.loads((Path(run_dir) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def save_manifest(run_dir, manifest):
    write_json_atomic(Path(run_dir) / "manifest.json", manifest)


def mark_failed(run_dir, manifest, reason):
    """Record that the run's trainer died: status failed, and in ``failures`` (a run may fail, be
    resumed and fail again) the iteration, the reason and when. Call it holding the run's lock."""
    manifest["status"] = FAILED
    manifest.setdefault("failures", []).append(
        {"iter": manifest.get("iterations_done", 0), "reason": reason, "time": now()})
    save_manifest(run_dir, manifest)


def last_failure(manifest):
    """Why the run failed last, as recorded."""
    return (manifest.get("failures") or [{}])[-1].get("reason", "no reason recorded")
