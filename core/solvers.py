"""Solver files on caffe_pb2.SolverParameter: one per data set, activation and solver type, and
the checks a SolverParameter passes before Caffe gets it (Caffe aborts the process on a policy it
does not know, a step policy without its step, a momentum AdaGrad refuses; and trains without a
word on a rate of 0, NaN or an iter_size of 0)."""
import math

from caffe.proto import caffe_pb2
from google.protobuf.descriptor import FieldDescriptor

from core.config import SOLVER_FIELDS, SOLVERS, ConfigError, check_momentum_free, check_number

# What a user's solver file may set (core/user_solver.py): the type, its rate and policy with the
# policy's parameters, the type's own fields, and the regularisation and gradient handling
OPTIMISATION_FIELDS = ("type", "base_lr", "lr_policy", "gamma", "power", "stepsize", "stepvalue",
                       "momentum", "momentum2", "delta", "rms_decay", "weight_decay",
                       "regularization_type", "clip_gradients", "iter_size", "max_iter")
_NUMBER_TYPES = (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE,
                 FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_INT64)
_FIELDS = caffe_pb2.SolverParameter.DESCRIPTOR.fields_by_name
# The optimisation fields that are numbers: each has its range in core.config (check_number)
NUMERIC_FIELDS = tuple(f for f in OPTIMISATION_FIELDS if _FIELDS[f].cpp_type in _NUMBER_TYPES)

# Caffe's learning-rate policies (sgd_solver.cpp, GetLearningRate): the fields each reads besides
# base_lr (Caffe takes an unset one as 0: a rate of 0 or an abort), and the rate it gives
LR_POLICIES = {
    "fixed": ((), "base_lr"),
    "step": (("gamma", "stepsize"), "base_lr * gamma ^ floor(iter / stepsize)"),
    "exp": (("gamma",), "base_lr * gamma ^ iter"),
    "inv": (("gamma", "power"), "base_lr * (1 + gamma * iter) ^ -power"),
    "multistep": (("gamma", "stepvalue"), "base_lr * gamma ^ (the stepvalues passed)"),
    "poly": (("power",), "base_lr * (1 - iter / max_iter) ^ power"),
    "sigmoid": (("gamma", "stepsize"), "base_lr / (1 + exp(-gamma * (iter - stepsize)))"),
}
REGULARIZATION_TYPES = ("L2", "L1")  # sgd_solver.cpp, Regularize: any other aborts


def solver_param(cfg, dataset, act, solver, test_patches, net=None, snapshot_prefix=None):
    """The SolverParameter of one run. Paths are relative to the repository root (where `caffe train`
    and the trainer run) unless given; ``test_patches`` sizes test_iter to cover the test set once.
    ``solver``: a name of SOLVERS, or a user's solver file (core.user_solver.UserSolver) whose
    optimisation fields go over SGD's (max_iter stays the config's: the trainer's schedule)."""
    if not isinstance(solver, str):  # a UserSolver (core.user_solver imports this module)
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


def check_solver(cfg, solver):
    """ConfigError (one line) unless the solver of a run of ``cfg`` with ``solver`` (a name of
    SOLVERS or a UserSolver), as Caffe would get it, runs and learns (check_solver_param). A
    config's numbers are checked as doubles; Caffe reads 32-bit ones, where 1e-50 is 0."""
    try:
        param = solver_param(cfg, "check", "relu", solver, 0)
    except ValueError as exc:  # protobuf: a number beyond Caffe's 32-bit field
        raise ConfigError(f"a number does not fit Caffe's 32-bit solver fields ({exc})") from None
    try:
        check_solver_param(param)
    except ConfigError as exc:  # the config passed its checks: its value changed on the way
        raise ConfigError(f"{exc} (as Caffe reads the config's value, a 32-bit float)"
                          if isinstance(solver, str) else str(exc)) from None
    return param


def _shown(param, field):
    """The field's value as the file would write it: a list for a repeated field, a 32-bit
    float to the digits it holds (0.9, not 0.8999999761581421)."""
    value = getattr(param, field)
    if _FIELDS[field].label == FieldDescriptor.LABEL_REPEATED:
        return list(value)
    return float(f"{value:.7g}") if _FIELDS[field].cpp_type == FieldDescriptor.CPPTYPE_FLOAT else value


def _is_set(param, field):
    value = getattr(param, field)
    return len(value) > 0 if _FIELDS[field].label == FieldDescriptor.LABEL_REPEATED else param.HasField(field)


def check_solver_param(param, complete=True):
    """ConfigError (one line) for what Caffe would abort on or train nothing with: every numeric
    optimisation field finite and in its range (core.config.check_number: POSITIVE, NON_NEGATIVE
    and the rest), a known lr_policy with the fields it reads (LR_POLICIES), a known
    regularization_type, a momentum only where the type takes one. ``complete``: ``param`` is
    the whole solver (a policy's fields must be there); else a solver file's fields alone,
    checked each as far as it goes."""
    for field in NUMERIC_FIELDS:
        if _is_set(param, field):
            check_number(field, _shown(param, field))
    if param.HasField("lr_policy") and param.lr_policy not in LR_POLICIES:
        raise ConfigError(f"lr_policy {param.lr_policy!r} is not one of Caffe's "
                          f"({', '.join(LR_POLICIES)})")
    if complete:
        _check_policy_fields(param)
    if param.HasField("regularization_type") and param.regularization_type not in REGULARIZATION_TYPES:
        raise ConfigError(f"regularization_type {param.regularization_type!r} is not one of Caffe's "
                          f"({', '.join(REGULARIZATION_TYPES)})")
    if param.HasField("type"):
        check_momentum_free(param.type, param.type, _shown(param, "momentum"))


def _check_policy_fields(param):
    """The fields the solver's lr_policy reads are set (Caffe reads an unset one as 0), a step is
    positive (Caffe checks it: sgd_solver.cpp), a multistep's steps come in order."""
    policy = param.lr_policy or "fixed"
    needs, rate = LR_POLICIES[policy]
    missing = [f for f in needs if not _is_set(param, f)]
    if missing:
        raise ConfigError(f"lr_policy {policy!r} needs {' and '.join(needs)} (rate = {rate}): "
                          f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set")
    if "stepsize" in needs and param.stepsize <= 0:
        raise ConfigError(f"lr_policy {policy!r} needs stepsize > 0 (rate = {rate}), got {param.stepsize}")
    steps = list(param.stepvalue)
    if policy == "multistep" and steps != sorted(set(steps)):
        raise ConfigError(f"lr_policy 'multistep' needs its stepvalues in increasing order, got {steps}")
