"""A training run's directory: its own nets and solver, snapshots, and manifest.json.

    runs/<dataset>/<act>_<solver>/seed<k>/
        train_val.prototxt, deploy.prototxt, solver.prototxt   generated from the run's config
        snapshots/srcnn_iter_<N>.caffemodel / .solverstate
        manifest.json                                           config, metrics, snapshots, status

A run directory is self-contained: the manifest names its files relative to the directory, and
every reader resolves them inside it (``run_path``), so a copy is a copy. Manifests written before
that name absolute paths: the file of that name inside the directory is the one used, never a file
elsewhere (the original's, for a copy). Only solver.prototxt holds absolute paths, as Caffe needs
them; the trainer rewrites it for a directory it finds copied or moved.
"""
import json
import subprocess
from pathlib import Path

from caffe.proto import caffe_pb2
from google.protobuf import text_format

from core.errors import DataError
from core.atomic import write_text_atomic
from core.config import ROOT
from core.data_files import list_file
from core.machine import machine
from core.names import PAPER_NET, manifest_variant, variant
from core.nets import deploy_net, train_val_net
# A manifest's reading, writing and status live where the supervising process, which loads no
# Caffe, reads them too
from core.run_status import now, read_manifest, save_manifest  # noqa: F401
from core.solvers import solver_param


def default_run_dir(dataset, act, solver, seed=0):
    """runs/<dataset>/<act>_<solver>/seed<k>: one directory per variant and seed."""
    return ROOT / "runs" / dataset / variant(act, solver) / f"seed{seed}"


# runs/<dataset>/long_schedule/: where `make reference` trains; not a run of the default grid, so
# tables and curves leave it out (its packed copy, models/reference/<dataset>/, is scored instead).
LONG_RUN = "long_schedule"


# runs/<dataset>/long/<act>_<solver>/: make reference's runs of the paper's other variants, packed
# into models/long/<dataset>/<act>_<solver>/ (the paper's net keeps long_schedule/ and reference/)
LONG_VARIANTS = "long"


def long_run_dir(dataset, act=PAPER_NET[0], solver=PAPER_NET[1]):
    """Where `make reference` trains a variant's long schedule."""
    if (act, solver) == PAPER_NET:
        return ROOT / "runs" / dataset / LONG_RUN
    return ROOT / "runs" / dataset / LONG_VARIANTS / variant(act, solver)


def long_pack_dir(dataset, act=PAPER_NET[0], solver=PAPER_NET[1], root=None):
    """Where `make reference` packs a variant's long schedule: models/reference/<dataset>/ for the
    paper's net, models/long/<dataset>/<act>_<solver>/ for another."""
    if (act, solver) == PAPER_NET:
        return reference_root(root) / dataset
    return long_root(root) / dataset / variant(act, solver)


def reference_root(root=None):
    """models/reference/ of the checkout at ``root`` (default: this one): the committed
    long-schedule weights, one folder per data set (`make reference` packs them)."""
    return Path(ROOT if root is None else root) / "models" / "reference"


def long_root(root=None):
    """models/long/ of the checkout at ``root``: the other variants' packs (long_pack_dir)."""
    return Path(ROOT if root is None else root) / "models" / "long"


REFERENCE_ROOT, LONG_ROOT = reference_root(), long_root()


def reference_dir(dataset, root=None):
    """``models/reference/<dataset>`` when it holds trained long-schedule weights, else None."""
    ref = reference_root(root) / dataset
    return ref if (read_manifest(ref) or {}).get("snapshots") else None


def long_dirs(dataset, root=None):
    """{variant: folder} of a data set's packed long schedules that hold weights: the reference
    (the paper's net) first, then models/long/<dataset>/*/ by name."""
    found = {}
    ref = reference_dir(dataset, root)
    if ref is not None:
        found[variant(*PAPER_NET)] = ref
    for folder in sorted(p for p in (long_root(root) / dataset).glob("*") if p.is_dir()):
        manifest = read_manifest(folder) or {}
        if manifest.get("snapshots") and "act" in manifest and "solver" in manifest:
            found.setdefault(variant(manifest["act"], manifest["solver"]), folder)
    return found


def references(root=None):
    """The data sets that have committed reference weights."""
    return sorted(d.name for d in reference_root(root).glob("*") if reference_dir(d.name, root))


def is_reference(run_dir, root=None):
    """True for a folder of models/reference/."""
    return Path(run_dir).resolve().parent == reference_root(root).resolve()


def run_label(manifest):
    """How tables and plots name a run: ``<act>_<solver>/seed<k>`` (seed 0 for older manifests)."""
    return f"{manifest_variant(manifest)}/seed{manifest.get('seed', 0)}"


# Caffe writes a run's snapshots here first; the trainer renames a pair into snapshots/ once it
# is whole (tools/snapshots.py)
PARTIAL = ".partial"
SNAPSHOT_NAME = "srcnn"  # snapshots are <name>_iter_<N>.caffemodel / .solverstate


def staging_prefix(run_dir):
    """The snapshot_prefix of a run's solver: snapshots/.partial/srcnn."""
    return Path(run_dir).resolve() / "snapshots" / PARTIAL / SNAPSHOT_NAME


def trainable_net_files(directory, cfg, act, solver, train_list, test_list=None, dataset="custom",
                        snapshot_prefix=None):
    """A trainable net for given HDF5 files, written into ``directory``: the generated train_val
    net of ``act`` with its HDF5Data sources pointed at the list files ``train_list`` (TRAIN) and
    ``test_list`` (TEST; default: ``train_list``), the deploy net, and a ``solver`` solver over the
    train_val. Returns their paths: {"train_val", "deploy", "solver"} (train_val.prototxt,
    deploy.prototxt, solver.prototxt). ``dataset`` only names the net (SRCNN_<act>_<dataset>).

    The solver has no Caffe-side test net, snapshots or log lines (test_iter and test_interval
    cleared, snapshot and display 0): whoever steps it tests and snapshots itself, as the trainer
    does on full test images. A snapshot it is asked for goes to ``snapshot_prefix`` (default
    ``directory``/snapshots/srcnn)."""
    directory = Path(directory)
    net = train_val_net(cfg, act, dataset)
    lists = {"train": train_list, "test": train_list if test_list is None else test_list}
    for layer in net.layer:
        if layer.type == "HDF5Data":
            phase = "train" if layer.include[0].phase == caffe_pb2.TRAIN else "test"
            layer.hdf5_data_param.source = str(lists[phase])
    files = {"train_val": directory / "train_val.prototxt", "deploy": directory / "deploy.prototxt",
             "solver": directory / "solver.prototxt"}
    write_text_atomic(files["train_val"], text_format.MessageToString(net))
    write_text_atomic(files["deploy"], text_format.MessageToString(deploy_net(cfg, act)))
    param = solver_param(cfg, dataset, act, solver, 0, net=str(files["train_val"]),
                         snapshot_prefix=str(snapshot_prefix or directory / "snapshots" / "srcnn"))
    del param.test_iter[:]  # no test net
    param.ClearField("test_interval")
    param.snapshot, param.display = 0, 0
    write_text_atomic(files["solver"], text_format.MessageToString(param))
    (directory / "snapshots").mkdir(exist_ok=True)
    return files


def write_run_nets(run_dir, cfg, dataset, act, solver, data_dir, train_list=None):
    """Generate the run's train_val, deploy and solver files (absolute data paths, snapshots
    staged in the run directory, no Caffe-side testing or snapshotting: the trainer does both
    itself). ``train_list`` replaces the data set's own train.txt (another seed's patch order)."""
    data_dir = Path(data_dir).resolve()
    return trainable_net_files(run_dir, cfg, act, solver, train_list or list_file(data_dir, "train"),
                               list_file(data_dir, "test"), dataset=dataset,
                               snapshot_prefix=staging_prefix(run_dir))


def nets_here(run_dir, manifest):
    """True when the run's three net files are in ``run_dir`` and its solver reads and writes
    there: false for a copied or moved directory (its solver.prototxt names the original's
    paths), and for a run from before snapshots were staged."""
    run_dir = Path(run_dir).resolve()
    files = manifest.get("files") or {}
    paths = {kind: run_path(run_dir, path, kind) for kind, path in files.items()}
    if set(paths) != {"train_val", "deploy", "solver"} or not all(p.is_file() for p in paths.values()):
        return False
    param = caffe_pb2.SolverParameter()
    try:
        text_format.Parse(paths["solver"].read_text(), param)
    except (text_format.ParseError, OSError, UnicodeDecodeError):
        return False
    return Path(param.net) == paths["train_val"] and Path(param.snapshot_prefix) == staging_prefix(run_dir)


# What a run directory holds before its first snapshot: the trainer may replace such a directory
# even without a manifest (a start killed before it wrote one)
GENERATED = {"train_val.prototxt", "deploy.prototxt", "solver.prototxt", "snapshots", "manifest.json"}


def only_generated(run_dir):
    """True when ``run_dir`` holds nothing but the trainer's generated files and no snapshot."""
    run_dir = Path(run_dir)
    entries = {p.name for p in run_dir.iterdir()}
    if not entries <= GENERATED:
        return False
    snaps = run_dir / "snapshots"
    return not snaps.is_dir() or {p.name for p in snaps.iterdir()} <= {PARTIAL}


def git_commit():
    """The repository's HEAD commit (with "+dirty" if files changed), or None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def caffe_version():
    import caffe
    return {"version": caffe.__version__, "pycaffe": str(Path(caffe.__file__).parent)}


def new_manifest(cfg, dataset, act, solver, files, data_dir, seed=0):
    return {"dataset": dataset, "act": act, "solver": solver, "seed": seed, "status": "running",
            "config": cfg.as_dict(), "data": str(Path(data_dir).resolve()),
            "files": {k: str(v) for k, v in files.items()}, "git_commit": git_commit(),
            "caffe": caffe_version(), "started": now(), "iterations_done": 0,
            "wall_time_s": 0.0, "bicubic": None, "tests": [], "snapshots": []}


def record_machine(manifest, iteration):
    """Add to the manifest's ``machines`` the CPU and BLAS this process trains with, from
    ``iteration`` on, unless they are the ones already recorded last: a run resumed on another
    machine or OpenBLAS kernel says so, and from which iteration (docs/exactness.md)."""
    here = machine()
    machines = manifest.setdefault("machines", [])
    if not machines or {k: machines[-1].get(k) for k in here} != here:
        machines.append({"from_iter": int(iteration), **here})


# Where each recorded file lives inside a run directory
RUN_SUBDIRS = {"caffemodel": "snapshots", "solverstate": "snapshots", "deploy": "", "train_val": "",
               "solver": ""}


def run_path(run_dir, recorded, kind):
    """The file a manifest records (``kind``: a RUN_SUBDIRS key) inside ``run_dir``: a relative
    path is relative to ``run_dir``; an absolute one outside it (a copied or moved directory's
    manifest, or an older manifest's) is replaced by the file of that name in ``run_dir``."""
    run_dir, path = Path(run_dir).resolve(), Path(recorded)
    if not path.is_absolute():
        return run_dir / path
    if path.parent == run_dir / RUN_SUBDIRS[kind]:
        return path
    return run_dir / RUN_SUBDIRS[kind] / path.name


def relative_to_run(run_dir, path):
    """``path`` (inside ``run_dir``) as the manifest records it: relative to the directory."""
    return str(Path(path).resolve().relative_to(Path(run_dir).resolve()))


def final_snapshot(run_dir):
    """(manifest, deploy prototxt, final caffemodel) of a trained run directory; a DataError
    names what is missing."""
    run_dir = Path(run_dir)
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{run_dir}: not a run directory (cannot read manifest.json: {exc})")
    snapshots = (manifest.get("snapshots") or []) if isinstance(manifest, dict) else []
    if not snapshots or not snapshots[-1].get("caffemodel"):
        raise DataError(f"{run_dir}: the run has no snapshot yet (train it first)")
    deploy = (manifest.get("files") or {}).get("deploy") or "deploy.prototxt"
    return (manifest, run_path(run_dir, deploy, "deploy"),
            run_path(run_dir, snapshots[-1]["caffemodel"], "caffemodel"))
