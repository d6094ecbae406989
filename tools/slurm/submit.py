"""`make grid SCHEDULER=slurm`: submit the grid as one Slurm job array (one task per run,
tools/slurm/grid.sbatch) and an evaluation job after it (tools/slurm/eval.sbatch, afterok).

    python -m tools.slurm.submit --grid paper --seeds 1 --datasets "prostate" [--profile short]
        [--iters N] [--set "k=v ..."] [--sbatch-args "--partition=gpu ..."] [--logs DIR]
        [--dry-run] [-- KEY=VALUE ...]

The run names come from core.names (the same as `make grid`'s), in the order of the array's task
ids; KEY=VALUE after `--` are the trainer's config overrides. Every name and override is checked
before anything is submitted. The submission is recorded in <logs>/grid-<array id>.json and
<logs>/latest.json, which `make grid-status` reads.
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from core.args import command_line
from core.atomic import write_json_atomic
from core.config import ROOT, ConfigError, dataset_config
from core.data_files import data_dir, is_built
from core.names import grid_runs, parse_run
from core.run_files import now

HERE = Path(__file__).resolve().parent
GRID_SCRIPT = HERE / "grid.sbatch"
EVAL_SCRIPT = HERE / "eval.sbatch"
DEFAULT_LOGS = ROOT / "logs" / "slurm"
# The submitting make's own variables mean nothing to the jobs (and a jobserver's fds are gone).
DROPPED_ENV = ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")


class SubmitError(Exception):
    """One line for the user."""


def parse_args(argv):
    p = command_line("tools.slurm.submit", short="submit", description=__doc__.splitlines()[0])
    p.add_argument("--grid", default="paper", help="paper or full (core.names.GRIDS)")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0 .. N-1 of every run")
    p.add_argument("--datasets", default="", help="data sets, space-separated (default: all)")
    p.add_argument("--solvers", default="", help="solver types, space-separated: each with the paper's "
                   "two activations (default: the grid's variants)")
    p.add_argument("--solver-files", default="", help="solver files (absolute paths), space-separated: "
                   "each with the paper's two activations too, its runs named by its stem")
    p.add_argument("--profile", default="short", help="the make PROFILE, for the report's command")
    p.add_argument("--iters", default="", help="the make ITERS, for the report's command")
    p.add_argument("--set", default="", help="the make SET, for the report's command")
    p.add_argument("--sbatch-args", default=os.environ.get("SBATCH_ARGS", ""),
                   help="extra sbatch options for both jobs (partition, account, time limit, ...), "
                        "as one shell-quoted string (default: $SBATCH_ARGS)")
    p.add_argument("--logs", type=Path, default=DEFAULT_LOGS, help="where the jobs' logs and the "
                   "submission record go (default logs/slurm)")
    p.add_argument("--dry-run", action="store_true", help="print the sbatch commands; submit nothing")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="trainer config overrides")
    return p.parse_args(argv)


def report_command(args, datasets):
    """The command REPORT.md names as the one that produced the runs."""
    parts = ["make grid SCHEDULER=slurm", f"GRID={args.grid}", f"SEEDS={args.seeds}",
             f"DATASETS={shlex.quote(' '.join(datasets))}", f"PROFILE={args.profile}"]
    parts += [f"SOLVERS={shlex.quote(args.solvers)}"] if args.solvers.strip() else []
    parts += [f"SOLVER_FILES={shlex.quote(args.solver_files)}"] if args.solver_files.strip() else []
    parts += [f"ITERS={args.iters}"] if args.iters else []
    parts += [f"SET={shlex.quote(args.set)}"] if args.set.strip() else []
    return " ".join(parts)


def needs_gpu(datasets, overrides):
    """True when a run's config (its data set's settings, then the overrides) says solver_mode=GPU."""
    return any(dataset_config(d, overrides).solver_mode == "GPU" for d in datasets)


def solver_file_args(args):
    """The trainer options by which a task's run finds its solver file (tools.train)."""
    return [f"--grid-solver-file={f}" for f in args.solver_files.split()]


def sbatch_commands(args, runs, datasets, logs):
    """(array command, eval command) with the eval job's dependency left as {array}."""
    try:
        site = shlex.split(args.sbatch_args)
    except ValueError as e:
        raise SubmitError(f"SBATCH_ARGS: {e}")
    gpu = ["--gres=gpu:1"] if needs_gpu(datasets, args.overrides) else []
    common = ["sbatch", "--parsable", f"--chdir={ROOT}"]
    array = [*common, f"--array=0-{len(runs) - 1}", f"--output={logs}/grid-%A_%a.out", *gpu, *site,
             str(GRID_SCRIPT), *runs, "--", *solver_file_args(args), *args.overrides]
    evaluation = [*common, "--dependency=afterok:{array}", "--kill-on-invalid-dep=yes",
                  f"--output={logs}/eval-%j.out", *site, str(EVAL_SCRIPT),
                  report_command(args, datasets), *datasets]
    return array, evaluation


def sbatch(command):
    """Run one sbatch --parsable command; its job id."""
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = (proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}").splitlines()
    if proc.returncode != 0:
        raise SubmitError(f"sbatch failed: {lines[-1]}")
    job = proc.stdout.strip().split(";")[0]
    if not re.fullmatch(r"\d+", job):
        raise SubmitError(f"sbatch answered {proc.stdout.strip()!r}, not a job id")
    return job


def check_ready(datasets):
    if shutil.which("sbatch") is None:
        raise SubmitError("sbatch not found: run this where Slurm's client is (a login node); to try it "
                          "on this machine: make slurm-up, then the export SLURM_CONF=... line it prints")
    missing = [d for d in datasets if not is_built(data_dir(d))]
    if missing:
        raise SubmitError(f"no data set {', '.join(missing)} in data/: run `make data` first")


def running_elsewhere(logs, runs):
    """The runs of ``runs`` that an earlier submission (logs/latest.json) still has queued or
    running, with that array's id: two tasks must not train one run directory at once."""
    try:
        last = json.loads((Path(logs) / "latest.json").read_text())
    except (OSError, ValueError):
        return None, []
    array = last.get("array_job")
    if not array or shutil.which("squeue") is None:
        return array, []
    proc = subprocess.run(["squeue", "-h", "-r", "-j", array, "-o", "%i %T"], capture_output=True, text=True)
    active = {int(job.split("_")[1]) for job, *_ in (ln.split() for ln in proc.stdout.splitlines() if ln.strip())
              if "_" in job and job.split("_")[1].isdigit()} if proc.returncode == 0 else set()
    return array, [r for i, r in enumerate(last.get("runs", [])) if i in active and r in runs]


def relative(path):
    path = Path(path)
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def submit(args):
    datasets = args.datasets.split() or None
    runs = grid_runs(args.grid, *([datasets] if datasets else []), seeds=args.seeds,
                     solvers=args.solvers.split(), solver_files=args.solver_files.split())
    datasets = list(dict.fromkeys(parse_run(r)[0] for r in runs))
    logs = args.logs.resolve()
    array_cmd, eval_cmd = sbatch_commands(args, runs, datasets, logs)
    if args.dry_run:
        print(f"slurm: dry run, nothing submitted: {len(runs)} runs ({' '.join(runs)})")
        print(shlex.join(array_cmd))
        print(shlex.join(eval_cmd).replace("{array}", "<array job id>"))
        return 0
    previous, busy = running_elsewhere(logs, runs)
    if busy:
        raise SubmitError(f"job array {previous} still has {len(busy)} of these runs queued or running "
                          f"({' '.join(busy[:4])}{' ...' if len(busy) > 4 else ''}): a second task would "
                          f"train the same run directory; wait for it or scancel {previous} first")
    check_ready(datasets)
    if os.environ.get("SLURM_CONF"):
        print(f"slurm: cluster: SLURM_CONF={os.environ['SLURM_CONF']}")
    logs.mkdir(parents=True, exist_ok=True)
    array = sbatch(array_cmd)
    eval_cmd = [a.replace("{array}", array) for a in eval_cmd]
    record = {"array_job": array, "eval_job": None, "runs": runs, "datasets": datasets,
              "grid": args.grid, "seeds": args.seeds, "overrides": args.overrides,
              "submitted": now(), "logs": str(logs),
              "task_log": str(logs / f"grid-{array}_%a.out"),
              "sbatch": [shlex.join(array_cmd)]}
    try:
        record["eval_job"] = sbatch(eval_cmd)
        record["eval_log"] = str(logs / f"eval-{record['eval_job']}.out")
        record["sbatch"].append(shlex.join(eval_cmd))
    except SubmitError as e:
        raise SubmitError(f"job array {array} ({len(runs)} runs) was submitted, but not the evaluation "
                          f"job: {e}; submit it by hand: {shlex.join(eval_cmd)}")
    finally:
        write_json_atomic(logs / f"grid-{array}.json", record)
        write_json_atomic(logs / "latest.json", record)
    log_dir = relative(logs)
    print(f"slurm: job array {array}: {len(runs)} runs, task i = run i of: {' '.join(runs)}")
    print(f"slurm: evaluation job {record['eval_job']} (eval, curves, figures, REPORT.md) starts "
          f"when every task has finished (afterok:{array})")
    print(f"slurm: logs: {log_dir}/grid-{array}_<task>.out, {log_dir}/eval-{record['eval_job']}.out; "
          f"runs in runs/<dataset>/<act>_<solver>/seed<k>/; progress: make grid-status")
    return 0


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return submit(args)
    except (SubmitError, ConfigError) as e:
        print(f"slurm: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
