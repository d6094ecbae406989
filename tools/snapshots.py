"""The trainer's snapshots: written whole or not at all, and checked before `--resume` trusts one.

Caffe writes a snapshot itself, and aborts the process (glog FATAL) when the disk fills up in the
middle, leaving a truncated file. So Caffe writes into ``snapshots/.partial/``, and a pair is
renamed into ``snapshots/`` only once both files parse. Before a write, the free space is checked
against the pair's size. Caffe also aborts when it restores a 0-byte, truncated or foreign
.caffemodel or .solverstate, or resumes "done" from an empty one, so ``check`` reads both first:
they must parse, fill the train net's every parameter blob, and agree on the iteration.
"""
import shutil
from pathlib import Path

from caffe.proto import caffe_pb2

from core.errors import DataError
from data_prep.io.files import write_bytes
from core.run_files import SNAPSHOT_NAME, relative_to_run, run_path, staging_prefix
from inference.caffemodel import check_caffemodel, read_binary_proto, read_caffemodel

# History blobs Caffe's solvers keep per parameter blob: one (momentum, squared gradients), or
# two for AdaDelta and Adam (sgd_solvers.cpp: their PreSolve adds a second set)
HISTORY_SETS = {"SGD": 1, "Nesterov": 1, "AdaGrad": 1, "RMSProp": 1, "AdaDelta": 2, "Adam": 2}
HEADROOM = 2  # free space asked for before a snapshot, in multiples of a pair's size (pair_bytes)


class SnapshotError(DataError):
    """A snapshot that cannot be written or trusted: one line naming it."""


def read_state(path):
    """The .solverstate as a SolverState; SnapshotError if it is missing, empty or corrupt."""
    try:
        state = read_binary_proto(path, caffe_pb2.SolverState(), "solver state", "solver state")
    except DataError as exc:
        raise SnapshotError(str(exc)) from None
    if not state.HasField("iter"):
        raise SnapshotError(f"{path} is empty or not a solver state")
    return state


def check(net, solver_type, iteration, caffemodel, solverstate):
    """SnapshotError unless the pair is whole: the .caffemodel parses and fills ``net`` (the
    solver's train net), the .solverstate parses, is of ``iteration`` and holds the history
    ``solver_type`` keeps for each parameter blob, in its shape."""
    try:
        if Path(caffemodel).is_file() and Path(caffemodel).stat().st_size == 0:  # an empty message parses
            raise DataError(f"{caffemodel}: empty")
        model = read_caffemodel(caffemodel)
        check_caffemodel(net, model, caffemodel)
    except DataError as exc:
        raise SnapshotError(str(exc)) from None
    state = read_state(solverstate)
    if state.iter != iteration:
        raise SnapshotError(f"{solverstate} is of iteration {state.iter}, its manifest says {iteration}")
    shapes = [tuple(b.data.shape) for layer in net.layers for b in layer.blobs]
    wanted = shapes * HISTORY_SETS.get(solver_type, 1)
    found = [tuple(b.shape.dim) for b in state.history]
    if found != wanted:
        raise SnapshotError(f"{solverstate} holds {len(found)} history blobs, the net needs "
                            f"{len(wanted)} of its shapes (not this run's solver state?)")


def newest_good(net, solver_type, run_dir, snapshots):
    """The newest of a manifest's ``snapshots`` whose pair passes ``check``, or None."""
    for snap in reversed(snapshots):
        try:
            check(net, solver_type, snap["iter"], *pair_paths(run_dir, snap))
        except SnapshotError:
            continue
        return snap
    return None


def pair_paths(run_dir, snap):
    """(caffemodel, solverstate) of a manifest's snapshot entry, inside ``run_dir``."""
    return tuple(run_path(run_dir, snap[kind], kind) for kind in ("caffemodel", "solverstate"))


def pair_bytes(net, solver_type):
    """About the size of one snapshot pair of ``net``: float32 weights, and the solver's history
    of the same shapes, plus what protobuf adds around them."""
    floats = sum(b.data.size for layer in net.layers for b in layer.blobs)
    return 4 * floats * (1 + HISTORY_SETS.get(solver_type, 1)) + 65536


def ensure_room(run_dir, needed):
    """SnapshotError when the run's file system has too little room for the next pair."""
    free = shutil.disk_usage(Path(run_dir) / "snapshots").free
    if free < HEADROOM * needed:
        raise SnapshotError(f"{Path(run_dir) / 'snapshots'}: no space left for a snapshot ({free} bytes "
                            f"free, a snapshot takes about {needed}); free some and --resume")


def write(solver, run_dir, solver_type):
    """Snapshot the solver at its iteration: Caffe writes into snapshots/.partial/, the pair is
    checked and renamed into snapshots/. Returns the manifest entry (paths relative to the run)."""
    run_dir = Path(run_dir)
    ensure_room(run_dir, pair_bytes(solver.net, solver_type))
    partial = staging_prefix(run_dir).parent
    shutil.rmtree(partial, ignore_errors=True)  # an earlier process's leftovers
    partial.mkdir(parents=True)
    solver.snapshot()
    it = solver.iter
    names = [f"{SNAPSHOT_NAME}_iter_{it}{ext}" for ext in (".caffemodel", ".solverstate")]
    check(solver.net, solver_type, it, *(partial / n for n in names))
    for name in names:
        (partial / name).replace(run_dir / "snapshots" / name)
    partial.rmdir()
    point_state_at(run_dir / "snapshots" / names[1], run_dir / "snapshots" / names[0])
    return {"iter": it, "caffemodel": relative_to_run(run_dir, run_dir / "snapshots" / names[0]),
            "solverstate": relative_to_run(run_dir, run_dir / "snapshots" / names[1])}


def point_state_at(solverstate, caffemodel):
    """Make a .solverstate name ``caffemodel`` as its weights. Caffe keeps the weights' path in
    the state (``learned_net``) and aborts the process when that file is gone, as it is for a run
    directory moved, copied from another machine, or unpacked from a reference."""
    state = caffe_pb2.SolverState()
    state.ParseFromString(Path(solverstate).read_bytes())
    if state.learned_net != str(caffemodel):
        state.learned_net = str(caffemodel)
        write_bytes(solverstate, state.SerializeToString())
