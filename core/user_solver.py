"""A user's own solver prototxt as a variant (`make train SOLVER_FILE=my_solver.prototxt`).

The harness keeps what makes a run comparable and resumable (its net, data, test, snapshot, seed and
device fields) and takes from the file what optimises: OPTIMISATION_FIELDS. Every field of the
file that the harness keeps its own value of is said in one line. The variant is named after the
file (``<act>_<stem>``); the manifest keeps the file's text and hash, and ``--resume`` refuses a
file that changed.
"""
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

from caffe.proto import caffe_pb2
from google.protobuf import text_format

from core.config import SOLVERS, ConfigError

# What a solver file may set: the type, its rate and policy with the policy's parameters, the
# type's own fields, and the regularisation and gradient handling
OPTIMISATION_FIELDS = ("type", "base_lr", "lr_policy", "gamma", "power", "stepsize", "stepvalue",
                       "momentum", "momentum2", "delta", "rms_decay", "weight_decay",
                       "regularization_type", "clip_gradients", "iter_size", "max_iter")


@dataclass(frozen=True)
class UserSolver:
    """A parsed solver file: ``name`` (its stem, the variant's solver name), its ``text`` and
    ``sha256``, ``param`` (the optimisation fields only) and the fields it set that the harness
    keeps (``kept``)."""
    name: str
    text: str
    sha256: str
    param: caffe_pb2.SolverParameter
    kept: tuple

    @property
    def type(self):
        return self.param.type

    def record(self, path):
        """What the manifest keeps of it."""
        return {"path": str(Path(path).resolve()), "name": self.name, "type": self.type,
                "sha256": self.sha256, "text": self.text}

    def apply(self, param):
        """The harness's SolverParameter ``param`` with this file's optimisation fields over it."""
        for field, _ in self.param.ListFields():
            param.ClearField(field.name)
        param.MergeFrom(self.param)
        return param


def read_solver_file(path):
    """The UserSolver of ``path``; ConfigError (one line naming the file and the line or field)
    for a file that is missing, does not parse, names no Caffe solver type or sets no
    optimisation field, or whose name is one of the built-in solvers'."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the solver file ({exc})") from None
    if path.stem in SOLVERS:
        raise ConfigError(f"{path}: a solver file named like the built-in solver {path.stem!r}: "
                          "rename it (the variant is named after the file)")
    full = caffe_pb2.SolverParameter()
    try:
        text_format.Parse(text, full)
    except text_format.ParseError as exc:
        raise ConfigError(f"{path}: not a solver prototxt: {exc}") from None
    kept = [field.name for field, _ in full.ListFields() if field.name not in OPTIMISATION_FIELDS]
    wanted = caffe_pb2.SolverParameter()
    wanted.CopyFrom(full)
    for name in kept:
        wanted.ClearField(name)
    if not wanted.ListFields():
        raise ConfigError(f"{path}: sets no optimisation field (only {', '.join(kept) or 'nothing'}); "
                          f"a solver file gives some of {', '.join(OPTIMISATION_FIELDS)}")
    if wanted.HasField("type") and wanted.type not in SOLVERS.values():
        raise ConfigError(f"{path}: type {wanted.type!r} is not one of Caffe's solver types "
                          f"({', '.join(SOLVERS.values())})")
    return UserSolver(path.stem, text, hashlib.sha256(text.encode()).hexdigest(), wanted, tuple(kept))


def main(argv=None):
    """`python -m core.user_solver FILE...` (make grid SOLVER_FILES=): each file read as the
    trainer will read it, one line each; exit 2 at the first it refuses."""
    paths = sys.argv[1:] if argv is None else argv
    for path in paths:
        try:
            solver = read_solver_file(path)
        except ConfigError as e:
            print(f"solver file: error: {e}", file=sys.stderr)
            return 2
        taken = ", ".join(field.name for field, _ in solver.param.ListFields())
        kept = f"; the harness keeps its own {', '.join(solver.kept)}" if solver.kept else ""
        print(f"solver file: {path}: variant <act>_{solver.name}, {solver.type or 'SGD'}: "
              f"takes {taken}{kept}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
