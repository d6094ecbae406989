"""A user's own solver prototxt as a variant (`make train SOLVER_FILE=my_solver.prototxt`).

The harness keeps what makes a run comparable and resumable (its net, data, test, snapshot, seed and
device fields) and takes from the file what optimises: OPTIMISATION_FIELDS. Every field of the
file that the harness keeps its own value of is said in one line. The variant is named after the
file (``<act>_<stem>``); the manifest keeps the file's text and hash, and ``--resume`` refuses a
file that changed.

A file is checked as the config's SET= overrides are (core.solvers.check_solver_param): each number
in its range, NaN and inf refused, a policy Caffe knows with the fields it reads, the type's own
rules (AdaGrad and RMSProp take no momentum): first alone (read_solver_file), then as the solver
Caffe gets, over the harness's fields (UserSolver.check), before anything is written.
"""
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

from caffe.proto import caffe_pb2
from google.protobuf import text_format

from core.args import command_line
from core.config import DEFAULT, MOMENTUM_FREE, SOLVERS, ConfigError
from core.solvers import OPTIMISATION_FIELDS, check_solver, check_solver_param


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
        if param.type in (SOLVERS[s] for s in MOMENTUM_FREE) and not self.param.HasField("momentum"):
            param.ClearField("momentum")  # SGD's momentum is not the file's: this type refuses one
        return param

    def check(self, cfg, path):
        """ConfigError naming ``path`` unless this file over the harness's solver for ``cfg``
        gives Caffe a solver that runs and learns (core.solvers.check_solver)."""
        try:
            check_solver(cfg, self)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None


def read_solver_file(path):
    """The UserSolver of ``path``; ConfigError (one line naming the file and the line or field)
    for a file that is missing, does not parse, names no Caffe solver type or sets no
    optimisation field, whose name is one of the built-in solvers', or whose fields fail their
    checks each alone (core.solvers.check_solver_param: the harness's fields come in check())."""
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
    try:
        check_solver_param(wanted, complete=False)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return UserSolver(path.stem, text, hashlib.sha256(text.encode()).hexdigest(), wanted, tuple(kept))


def main(argv=None):
    """`python -m core.user_solver FILE... [-- KEY=VALUE...]` (make grid SOLVER_FILES=): each file
    read and checked as the trainer will, over the config with the KEY=VALUE overrides (make's
    SET=), one line each; exit 2 at the first it refuses."""
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = command_line("core.user_solver", short="solver file",
                          description="check solver files as the trainer will read them")
    parser.add_argument("files", nargs="+", metavar="FILE", help="solver prototxt files")
    paths, overrides = parser.parse_args(argv[:split]).files, argv[split + 1:]
    try:
        cfg = DEFAULT.with_overrides(overrides)
    except ConfigError as e:
        print(f"solver file: error: {e}", file=sys.stderr)
        return 2
    for path in paths:
        try:
            solver = read_solver_file(path)
            file_cfg = cfg.with_overrides([f"max_iter={solver.param.max_iter}"]
                                          if solver.param.HasField("max_iter") else [])
            solver.check(file_cfg, path)
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
