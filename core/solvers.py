"""Solver files on caffe_pb2.SolverParameter: one per data set, activation and solver type."""
import math

from caffe.proto import caffe_pb2

from core.config import SOLVER_FIELDS, SOLVERS
from core.user_solver import UserSolver


def solver_param(cfg, dataset, act, solver, test_patches, net=None, snapshot_prefix=None):
    """The SolverParameter of one run. Paths are relative to the repository root (where `caffe train`
    and the trainer run) unless given; ``test_patches`` sizes test_iter to cover the test set once.
    ``solver``: a name of SOLVERS, or a user's solver file (core.user_solver.UserSolver) whose
    optimisation fields go over SGD's (max_iter stays the config's: the trainer's schedule)."""
    if isinstance(solver, UserSolver):
        s = solver.apply(solver_param(cfg, dataset, act, "sgd", test_patches, net, snapshot_prefix))
        s.max_iter = cfg.max_iter
        return s
    s = caffe_pb2.SolverParameter()
    s.net = net or f"models/{dataset}/srcnn_{act}_train_val.prototxt"
    s.type = SOLVERS[solver]  # "SGD" (momentum) or "Nesterov": the paper's comparison
    s.base_lr = cfg.base_lr  # per-layer rates come from the nets' lr_mult
    for field in SOLVER_FIELDS[solver]:  # only what the type reads: SGD's files stay as they were
        setattr(s, field, getattr(cfg, field))
    s.weight_decay = cfg.weight_decay
    s.lr_policy = cfg.lr_policy
    if cfg.lr_policy == "step":  # a fixed-rate solver file names neither (files stay the same)
        s.stepsize, s.gamma = cfg.stepsize, cfg.gamma
    s.max_iter = cfg.max_iter
    s.test_iter.append(math.ceil(test_patches / cfg.batch_test))
    s.test_interval = cfg.test_interval
    s.test_initialization = False  # the trainer scores iteration 0 itself, on full images
    s.display = cfg.display
    s.snapshot = cfg.snapshot
    s.snapshot_prefix = snapshot_prefix or f"models/{dataset}/srcnn_{act}_{solver}"
    s.random_seed = cfg.random_seed
    s.solver_mode = getattr(caffe_pb2.SolverParameter, cfg.solver_mode)
    return s
