"""The trainer's run directory over its life (`python -m tools.train`): which run a command
trains, decided holding the run's lock: a fresh one, one resumed from its last snapshot (or
--resume-from's), or a failed one taken up again, resumed or started over; and an error that ends
a trainer, recorded in its manifest."""
import json
import os
import shutil

os.environ.setdefault("GLOG_minloglevel", "2")  # before Caffe loads (core.run_files): its INFO lines

from core.cli import os_error_line  # noqa: E402
from core.config import BUILD_ONLY_KEYS, ConfigError, with_added_keys  # noqa: E402
from core.errors import DataError  # noqa: E402
from core.run_files import (new_manifest, nets_here, only_generated, read_manifest,  # noqa: E402
                            relative_to_run, save_manifest, write_run_nets)
from core.run_status import FAILED, RUNNING, last_failure, mark_failed  # noqa: E402
from data_prep.shuffle import train_list  # noqa: E402


class TrainError(Exception):
    """A user mistake or an unusable run directory: one line for the user."""


def comparable(config):
    """The config fields that must match to resume a run (max_iter may grow, and the build-only keys
    may change, core.config.BUILD_ONLY_KEYS; keys the run predates count at the value it was
    trained with, core.config.ADDED_KEYS)."""
    return {k: v for k, v in json.loads(json.dumps(with_added_keys(config))).items()
            if k != "max_iter" and k not in BUILD_ONLY_KEYS}


def build_changed(config, cfg):
    """True when a run's recorded config builds its nets otherwise than ``cfg`` does."""
    old = with_added_keys(config)
    return any(old[k] != getattr(cfg, k) for k in BUILD_ONLY_KEYS)


# Why a manifest says "running" when the trainer that takes its lock finds it so: no process held
# the lock, so its trainer died with its supervisor (tools/supervisor.py), or without one
DIED_UNSEEN = "its trainer stopped without a word: killed, or the machine went down"


def prepare_run(args, cfg, data_dir, run_dir):
    """(manifest, snapshot to restore or None) for a new, forced or resumed run, or a failed one
    taken up again (after_failure); None, None when a resumed run is already finished. Called
    holding the run's lock."""
    old = read_manifest(run_dir)
    if run_dir.exists() and old is None and not only_generated(run_dir):
        raise TrainError(f"{run_dir} is not a run directory (no manifest.json) and holds other files: "
                         "not replacing it; choose another --run-dir")
    if old is not None and old.get("status") == RUNNING:  # and this process holds its lock
        mark_failed(run_dir, old, DIED_UNSEEN)
    if old is not None and old.get("status") == FAILED and not args.force and args.resume_from is None:
        return after_failure(args, cfg, data_dir, run_dir, old)
    if old is not None and not (args.force or args.resume):
        raise TrainError(f"{run_dir} exists: add --resume (make: RESUME=1) to continue it or --force "
                         "(make: FORCE=1) to replace it")
    if args.resume and old is not None:
        change = recipe_change(args, cfg, old)
        if change is not None:
            kept = "its text is in the manifest; " if "solver file" in change else ""
            raise TrainError(f"{run_dir} was trained with {change}: {kept}use --force (make: FORCE=1) "
                             "for a new run")
        if args.resume_from is None and old["iterations_done"] >= cfg.max_iter and old["status"] == "done":
            return None, None
        if old["snapshots"]:
            return resumed(args, cfg, data_dir, run_dir, old)
    if args.resume_from is not None:
        raise TrainError(f"{run_dir} has no snapshot to resume from")
    return fresh(args, cfg, data_dir, run_dir), None


def recipe_change(args, cfg, old):
    """What differs between the run's manifest ``old`` and this command that forbids resuming it
    ("another config", "another solver file (or none)"), or None."""
    if comparable(old["config"]) != comparable(cfg.as_dict()):
        return "another config"
    recorded = (old.get("solver_file") or {}).get("sha256")
    if recorded != (args.user_solver.sha256 if args.user_solver else None):
        return "another solver file (or none)"
    return None


def after_failure(args, cfg, data_dir, run_dir, old):
    """A failed run, taken up by the same command with no flag (make train passes neither --resume
    nor --force): resumed from its last snapshot when its config and solver file are this
    command's, else started over (a run that failed has nothing to finish); one line says which."""
    said = f"train: {run_dir} failed after iteration {old['iterations_done']} ({last_failure(old)})"
    change = recipe_change(args, cfg, old)
    if change is None and old["snapshots"]:
        manifest, restore = resumed(args, cfg, data_dir, run_dir, old)
        print(f"{said}: resuming it from its snapshot of iteration {restore['iter']}")
        return manifest, restore
    why = f"it was trained with {change}" if change else "it has no snapshot"
    print(f"{said}: starting it over ({why})")
    return fresh(args, cfg, data_dir, run_dir), None


def chosen_snapshot(manifest, resume_from, run_dir):
    """The manifest's last snapshot, or the one of iteration ``resume_from``."""
    if resume_from is None:
        return manifest["snapshots"][-1]
    for snap in manifest["snapshots"]:
        if snap["iter"] == resume_from:
            return snap
    listed = ", ".join(str(s["iter"]) for s in manifest["snapshots"])
    raise TrainError(f"{run_dir} has no snapshot of iteration {resume_from} (it has: {listed})")


def resumed(args, cfg, data_dir, run_dir, old):
    """The manifest of a run continued from its last snapshot (or --resume-from's), with the
    tests and snapshots after it dropped and its nets written for here where need be: a copied
    or moved directory's solver names the original's paths, and a build-only key may change."""
    last = chosen_snapshot(old, args.resume_from, run_dir)
    old["tests"] = [t for t in old["tests"] if t["iter"] <= last["iter"]]
    old["snapshots"] = [s for s in old["snapshots"] if s["iter"] <= last["iter"]]
    old["iterations_done"] = min(old["iterations_done"], last["iter"])
    rebuild = build_changed(old["config"], cfg) or old.get("data") != str(data_dir.resolve())
    here = nets_here(run_dir, old)
    if not here and old.get("files"):
        print(f"train: {run_dir}: its nets name another directory or are missing (a copy, a move or an "
              f"older run): written anew for this one")
    old["config"], old["status"] = cfg.as_dict(), "running"
    if rebuild or not here:
        files = write_run_nets(run_dir, cfg, args.dataset, args.act, args.user_solver or args.solver, data_dir,
                               train_list(data_dir, cfg.data_seed))
        old["files"] = {k: relative_to_run(run_dir, v) for k, v in files.items()}
        old["data"] = str(data_dir.resolve())
    return old, last


def fresh(args, cfg, data_dir, run_dir):
    """A new run directory with its nets and first manifest, or none at all if that fails."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    try:
        files = write_run_nets(run_dir, cfg, args.dataset, args.act, args.user_solver or args.solver, data_dir,
                               train_list(data_dir, cfg.data_seed))
        manifest = new_manifest(cfg, args.dataset, args.act, args.solver,
                                {k: relative_to_run(run_dir, v) for k, v in files.items()}, data_dir,
                                args.seed)
        if args.user_solver is not None:
            manifest["solver_file"] = args.user_solver.record(args.solver_file)
        save_manifest(run_dir, manifest)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)  # nothing half-made that would block a rerun
        raise
    return manifest


def record_error(run_dir, exc):
    """Mark the run failed, with ``exc`` as the reason, when an error ends this trainer while its
    manifest says it trains (an unreadable data file, a snapshot that fails its check)."""
    manifest = read_manifest(run_dir)
    if manifest is None or manifest.get("status") != RUNNING:
        return
    if isinstance(exc, OSError):
        reason = os_error_line(exc)
    elif isinstance(exc, (TrainError, ConfigError, DataError)):
        reason = str(exc)
    else:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    try:
        mark_failed(run_dir, manifest, " ".join(reason.split()))
    except OSError:  # the disk that failed the run: the next trainer finds it "running" and says so
        pass
