"""`make grid-status`: each run of the last Slurm submission (make grid SCHEDULER=slurm) and its
state: pending, running (iteration and last test PSNR from its manifest), finished, or failed (with
its log's last line); then the evaluation job.

    python -m tools.slurm.status [--logs DIR] [--job ARRAY_JOB_ID]

States come from squeue (which keeps a finished job for MinJobAge, 5 minutes by default) and, for
jobs it no longer lists, from the runs' manifests and the logs.
"""
import getpass
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from core.args import command_line
from core.config import ConfigError, dataset_config
from core.names import parse_run
from core.run_files import default_run_dir, read_manifest
from tools.slurm.submit import DEFAULT_LOGS, relative

FAILED = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
          "PREEMPTED", "SPECIAL_EXIT", "REVOKED"}
RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "RESIZING"}
PENDING = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "SUSPENDED", "STOPPED",
           "RESV_DEL_HOLD"}
# The batch scripts' own last line; the line before it says why a run failed.
SCRIPT_EXIT = re.compile(r"^(grid|eval)\.sbatch: \S+ (.*: trainer )?exit \d+$")


def load_record(logs, job=None):
    path = Path(logs) / (f"grid-{job}.json" if job else "latest.json")
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def queue_states(job_ids):
    """{job id or array task "A_i": (state, reason)} from squeue, or None if squeue cannot answer."""
    if shutil.which("squeue") is None:
        return None
    proc = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-u", getpass.getuser(),
                           "-o", "%i|%T|%r"], capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    states = {}
    for line in proc.stdout.splitlines():
        job, state, reason = (line.split("|") + ["", ""])[:3]
        if job.split("_")[0] in job_ids:
            states[job.strip()] = (state.strip(), reason.strip())
    return states


def last_line(path):
    """The log's last meaningful line (progress bars split at carriage returns), or ''."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in re.split(r"[\r\n]+", text) if ln.strip()]
    while len(lines) > 1 and SCRIPT_EXIT.match(lines[-1]):
        lines.pop()
    return lines[-1][:200] if lines else ""


def progress(manifest, target=None):
    """'iteration I of N, test PSNR P dB at T' from a run's manifest (N: ``target`` if known)."""
    done = manifest.get("iterations_done", 0)
    total = target or (manifest.get("config") or {}).get("max_iter", "?")
    text = f"iteration {done} of {total}"
    tests = manifest.get("tests") or []
    if tests:
        text += f", test PSNR {tests[-1]['psnr']:.2f} dB at {tests[-1]['iter']}"
    return text


def run_state(queued, manifest, log, target=None):
    """(state, detail) of one run: its task's (state, reason) in squeue (None when squeue no
    longer lists it or cannot be asked), its manifest (None if none yet), its log's path and the
    iterations the submission asked for (None: the manifest's max_iter)."""
    done = manifest.get("iterations_done", 0) if manifest else 0
    finished = (manifest is not None and manifest.get("status") == "done"
                and done >= (target or done))
    state, reason = queued or (None, "")
    if state in RUNNING:
        return "running", progress(manifest, target) if manifest else "starting"
    if state in PENDING:
        detail = f"({reason})" if reason and reason != "None" else ""
        if done:
            detail += f" resumes from iteration {done}"
        return "pending", detail.strip()
    if finished and state in (None, "COMPLETED"):
        return "finished", progress(manifest, target)
    if state in FAILED or state == "COMPLETED" or (state is None and Path(log).exists()):
        prefix = f"{state}: " if state and state != "COMPLETED" else ""
        return "failed", prefix + (last_line(log) or "(no log)")
    return "not started", "not in the queue, no log" + (f"; the run is at iteration {done}" if manifest else "")


def eval_state(record, queued):
    job = record.get("eval_job")
    if not job:
        return "failed", "the evaluation job was not submitted (see the submission's error)"
    state, reason = queued or (None, "")
    log = record.get("eval_log", "")
    if state in RUNNING:
        return "running", last_line(log)
    if state in PENDING:
        return "pending", f"({reason})" if reason and reason != "None" else ""
    if state == "COMPLETED" or (state is None and "report: wrote" in _tail(log)):
        return "finished", "REPORT.md written"
    if state in FAILED or state is None and Path(log).exists():
        return "failed", f"{state + ': ' if state else ''}{last_line(log) or '(no log)'}"
    return "not started", "not in the queue, no log"


def _tail(path):
    try:
        return Path(path).read_text(errors="replace")[-4000:]
    except OSError:
        return ""


def target(dataset, record):
    """The iterations the submission's overrides ask of a run of ``dataset`` (None if unknown)."""
    try:
        return dataset_config(dataset, record.get("overrides") or ()).max_iter
    except ConfigError:
        return None


def report(record, states):
    """The status table, as lines."""
    array, rows = record["array_job"], []
    for i, name in enumerate(record["runs"]):
        dataset, act, solver, seed = parse_run(name)
        manifest = read_manifest(default_run_dir(dataset, act, solver, seed))
        log = record["task_log"].replace("%a", str(i))
        queued = states.get(f"{array}_{i}") if states is not None else None
        if states is not None and queued is None and f"{array}" in states:
            queued = states[f"{array}"]  # an array not yet split into tasks
        rows.append((f"{array}_{i}", name, *run_state(queued, manifest, log, target(dataset, record))))
    eval_job = record.get("eval_job") or "-"
    rows.append((eval_job, "evaluation", *eval_state(record, states.get(eval_job) if states else None)))
    width = [max(len(r[k]) for r in rows) for k in range(3)]
    lines = [f"grid submitted {record['submitted']}: {len(record['runs'])} runs, job array {array}, "
             f"evaluation job {eval_job}; logs in {relative(record['logs'])}/"]
    if states is None:
        lines.append("(squeue did not answer: states from the manifests and logs only)")
    lines += ["  ".join(r[k].ljust(width[k]) for k in range(3)) + "  " + r[3] for r in rows]
    counts = {}
    for r in rows[:-1]:
        counts[r[2]] = counts.get(r[2], 0) + 1
    lines.append(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return lines


def main(argv=None):
    p = command_line("tools.slurm.status", short="grid-status", description=__doc__.splitlines()[0])
    p.add_argument("--logs", type=Path, default=DEFAULT_LOGS, help="the submissions' folder (logs/slurm)")
    p.add_argument("--job", help="the array job id of an earlier submission (default: the last)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    record = load_record(args.logs, args.job)
    if record is None:
        print(f"grid-status: no Slurm submission recorded in {relative(args.logs)}"
              f"{' for job ' + args.job if args.job else ''} (make grid SCHEDULER=slurm)", file=sys.stderr)
        return 1
    ids = {record["array_job"], record.get("eval_job")} - {None}
    for line in report(record, queue_states(ids)):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
