"""No name or value given to make is ever run (issue 32, case 10): every variable a target reads,
and the run name `$*` of `grid-%`, reaches the program as one word (a list variable: each of its
words), whatever it holds: backticks, `$( )`, `;`, `&&`, `|`, quotes, spaces, make's own `$(shell)`.

Make is called as a user calls it: from a folder of its own (tmp_path), the Makefile by its path.
Its python is a recorder (``recording_python``): the commands run for real, quickly, and what each
program was given is compared with what was planted. Every planted command would write ``pwned``
into $HOME (a folder of the test's own): it must stay empty of it. A few targets run the real
programs too, which refuse the planted value in one line."""
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import ROOT
from tests.helpers import clean_env

pytestmark = pytest.mark.slow

MAKEFILE = ROOT / "Makefile"
# Each would write $HOME/pwned if a shell ran it (`cd` alone goes $HOME): no '/', so that a file
# can be named so, and no '$' but make's own, so that the make of before pasted them as they are.
PLANTS = {
    "backticks": "`cd;id>pwned`",
    "substitution": "$(cd;id>pwned)",
    "semicolons": ";cd;id>pwned;",
    "and": "&&cd&&id>pwned&&",
    "pipe": "|(cd;id>pwned)|",
    "quotes": "'\";cd;id>pwned;#",
    "spaces": " x; cd; id >pwned",
    "make": "$(shell cd;id>pwned)",
}
WORD_PLANTS = {k: v for k, v in PLANTS.items() if " " not in v}  # for names a list cannot hold

RECORDER = '''#!{python}
"""A python for make (tests/test_shell_names.py): records each call; the project's core helpers
that the Makefile asks (python -m core.names, core.user_solver, core.locks, core.paper) run."""
import json, os, sys
args = sys.argv[1:]
if args[:1] == ["-m"] and args[1].startswith("core."):
    os.execve({python!r}, [{python!r}, *args], dict(os.environ, PYTHONPATH={root!r}))
with open({log!r}, "a") as log:
    log.write(json.dumps({{"argv": args, "cwd": os.getcwd(),
                          "threads": os.environ.get("OMP_NUM_THREADS")}}) + "\\n")
'''


@pytest.fixture
def world(tmp_path):
    """(caller folder, HOME, recording python, its log): a place to call make from."""
    caller, home, bin_dir = tmp_path / "caller", tmp_path / "home", tmp_path / "bin"
    for folder in (caller, home, bin_dir):
        folder.mkdir()
    log = tmp_path / "calls.jsonl"
    python = bin_dir / "python"
    python.write_text(RECORDER.format(python=sys.executable, root=str(ROOT), log=str(log)))
    python.chmod(0o755)
    return caller, home, python, log


def call_make(world, *args, recorded=True, env_vars=None, cwd=None):
    """make -f Makefile ARGS from the caller's folder, HOME the test's own; (process, calls)."""
    caller, home, python, log = world
    cwd = cwd or caller
    env = clean_env(HOME=str(home), PWD=str(cwd), **(env_vars or {}))
    command = ["make", "--no-print-directory", "-f", str(MAKEFILE), *args]
    if recorded:
        command.append(f"PY={python}")
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, calls


def nothing_ran(world):
    caller, home, _, _ = world
    return not list(home.rglob("pwned*")) and not list(caller.rglob("pwned*")) \
        and not (ROOT / "pwned").exists()


def received(calls, word):
    """True when a program got ``word`` as one argument: itself, --option=word, key=word or
    folder/word."""
    return any(a == word or a.endswith(("=" + word, "/" + word)) for c in calls for a in c["argv"])


# target: (fixed variables, {variable: "word" (one value) or "list" (words, each one argument)})
TARGETS = {
    "train": ({}, {"DATASET": "word", "ACT": "word", "SOLVER": "word", "SEED": "word",
                   "ITERS": "word", "GPU_ID": "word", "SET": "list", "LAYERS": "list",
                   "RESUME_FROM": "word"}),
    "train-solver-file": ({"DATASET": "prostate", "ACT": "relu"}, {"SOLVER_FILE": "word"}),
    "grid": ({"DATASETS": "prostate"}, {"ITERS": "word", "GPU_ID": "word", "SET": "list",
                                        "LAYERS": "list"}),
    "grid-slurm": ({"SCHEDULER": "slurm", "DRY_RUN": "1", "DATASETS": "prostate"},
                   {"ITERS": "word", "SLURM_LOGS": "word", "SET": "list", "LAYERS": "list"}),
    "grid-status": ({}, {"JOB": "word", "SLURM_LOGS": "word"}),
    "reference": ({}, {"DATASET": "word", "ACT": "word", "SOLVER": "word", "ITERS": "word",
                       "SET": "list", "LAYERS": "list"}),
    "eval": ({}, {"GPU_ID": "word", "DATASETS": "list"}),
    "regions": ({}, {"DATASET": "word", "RUN": "word", "DARK": "word", "ITERS": "list"}),
    "reproduce": ({"DATASETS": "prostate"}, {"ITERS": "word", "RUN_THREADS": "threads",
                                             "SET": "list", "LAYERS": "list"}),
    "bench": ({}, {"BENCH_ARGS": "list"}),
    "bench-cohort": ({}, {"SIZES": "word", "BENCH_ARGS": "list"}),
    "upscale": ({"FORCE": "1"}, {"IN": "word", "OUT": "word", "RUN": "word", "MEM": "word",
                                 "GPU_ID": "word"}),
    "upscale-reference": ({}, {"IN": "word", "OUT": "word", "REFERENCE": "word"}),
    "export": ({}, {"OUT": "word", "RUN": "word"}),
    "export-reference": ({}, {"OUT": "word", "REFERENCE": "word"}),
    "thickslice": ({}, {"IN": "word", "OUT": "word", "FACTOR": "word", "ITERS": "word",
                        "ACT": "word", "SOLVER": "word", "SLICE_PROFILE": "word", "SET": "list",
                        "LAYERS": "list"}),
    "thickslice-validate": ({}, {"ITERS": "word", "FACTORS": "list", "SET": "list",
                                 "LAYERS": "list", "ECLARE_PATCHES": "word",
                                 "VOLUME": "word"}),
    "data": ({}, {"DATASET": "list"}),
    "data-cohort": ({}, {"IN": "word", "NAME": "word", "SERIES": "word", "TEST_PATIENTS": "word",
                         "TEST_SLICES": "word", "JOBS": "word"}),
    "data-all": ({}, {"DATASETS": "list"}),
    "test-kernels": ({}, {"CORES": "list"}),
    "gpu-check": ({}, {"GPU_ID": "word"}),
}
MAKE_TARGET = {"train-solver-file": "train", "grid-slurm": "grid", "upscale-reference": "upscale",
               "export-reference": "export", "data-all": "data", "data-cohort": "data"}


def planted(variables, plant):
    """Each variable's value: the plant behind the variable's name, so each is told apart."""
    return {name: f"{name}{plant}" for name in variables}


@pytest.mark.parametrize("plant", PLANTS.values(), ids=PLANTS.keys())
@pytest.mark.parametrize("case", TARGETS)
def test_a_planted_value_reaches_the_program_as_it_is_and_nothing_runs(world, case, plant):
    fixed, variables = TARGETS[case]
    values = planted(variables, plant)
    proc, calls = call_make(world, MAKE_TARGET.get(case, case), *(f"{k}={v}" for k, v in
                                                                  {**fixed, **values}.items()))
    assert nothing_ran(world), (proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stderr
    for name, kind in variables.items():
        if kind == "threads":  # RUN_THREADS: the runs' thread count, in their environment
            assert {c["threads"] for c in calls if "--grid-run" in c["argv"]} == {values[name]}
            continue
        for word in values[name].split() if kind == "list" else [values[name]]:
            assert received(calls, word), (name, word, calls)


@pytest.mark.parametrize("plant", PLANTS.values(), ids=PLANTS.keys())
def test_a_value_from_the_environment_is_not_run_either(world, plant):
    values = planted(("IN", "OUT", "RUN", "MEM"), plant)
    proc, calls = call_make(world, "upscale", env_vars=values)
    assert nothing_ran(world) and proc.returncode == 0, proc.stderr
    assert all(received(calls, v) for v in values.values()), calls


@pytest.mark.parametrize("plant", WORD_PLANTS.values(), ids=WORD_PLANTS.keys())
def test_a_solver_file_name_is_never_run_by_make_grid(world, plant):
    """The issue's case: make grid SOLVER_FILES='z`id>pwned`.prototxt' ran id; each grid run's
    name (`grid-%`'s stem) holds the file's stem."""
    caller = world[0]
    stem = f"z{plant}"
    (caller / f"{stem}.prototxt").write_text('type: "Adam"\nbase_lr: 0.001\nmomentum: 0.9\n')
    proc, calls = call_make(world, "grid", "DATASETS=prostate", f"SOLVER_FILES={stem}.prototxt")
    assert nothing_ran(world), (proc.stdout, proc.stderr)
    if proc.returncode:  # core.names may refuse such a name: then in one line, before any run
        assert "names: error:" in proc.stderr and not any("--grid-run" in c["argv"] for c in calls)
        return
    for act in ("rrelu", "relu"):
        assert received(calls, f"prostate-{act}-{stem}-0"), calls
    assert received(calls, str(caller / f"{stem}.prototxt"))


def test_a_folder_make_is_called_from_is_not_run(world, tmp_path):
    """A relative IN is the caller's: its folder's name is a name too."""
    caller = tmp_path / "c`cd;id>pwned`$(shell cd;id>pwned)"
    caller.mkdir()
    proc, calls = call_make(world, "upscale", "IN=scan.png", "OUT=x3.png", "RUN=run", cwd=caller)
    assert nothing_ran(world) and not list(caller.rglob("pwned*")), proc.stderr
    assert proc.returncode == 0 and [c["cwd"] for c in calls] == [str(caller)], (proc.stderr, calls)


@pytest.mark.parametrize("case, variables, message", [
    ("grid", {"GRID": "paper"}, "names: error:"), ("grid", {"SEEDS": "1"}, "names: error:"),
    ("grid", {"DATASETS": "prostate"}, "names: error:"), ("grid", {"SOLVERS": "adam"}, "names: error:"),
    ("train", {"PROFILE": "paper"}, "is not a schedule"),
    ("grid", {"PROFILE": "paper"}, "is not a schedule"),
    ("reproduce", {"JOBS": "2"}, "-j"),
])
@pytest.mark.parametrize("plant", PLANTS.values(), ids=PLANTS.keys())
def test_a_planted_name_make_checks_is_refused_before_any_run(world, case, variables, message, plant):
    values = {k: v + plant for k, v in variables.items()}
    fixed = {"train": ["DATASET=prostate", "ACT=relu", "SOLVER=sgd"]}.get(case, ["DATASETS=prostate"])
    proc, calls = call_make(world, case, *fixed, *(f"{k}={v}" for k, v in values.items()))
    assert nothing_ran(world), (proc.stdout, proc.stderr)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    assert not any("--grid-run" in c["argv"] or "tools.train" in c["argv"] for c in calls), calls


@pytest.mark.parametrize("target, variables", [
    ("setup", ("GPU",)), ("slurm-up", ("SLURM_DIR", "SLURM_PORT")), ("slurm-down", ("SLURM_DIR",)),
    ("pacs-up", ("PACS_DIR", "PACS_PORT")), ("pacs-down", ("PACS_DIR",))])
@pytest.mark.parametrize("plant", PLANTS.values(), ids=PLANTS.keys())
def test_the_targets_that_install_or_start_daemons_print_each_value_as_one_word(world, target, variables, plant):
    """These are not run here (they install packages, start Slurm): `make -n` prints the commands;
    read as a shell reads them, each value is one word."""
    values = planted(variables, plant)
    proc, _ = call_make(world, "-n", target, *(f"{k}={v}" for k, v in values.items()), recorded=False)
    assert nothing_ran(world) and proc.returncode == 0, proc.stderr
    words = [w for line in proc.stdout.splitlines() for w in shlex.split(line)]
    for name, value in values.items():  # a relative folder may come resolved from the caller's
        assert (value in words or f"{name}={value}" in words
                or any(w.endswith(f"/{value}") for w in words)), (value, proc.stdout)


# ------------------------------------------------------------- the real programs refuse them

def test_a_planted_set_reaches_python_as_one_word_and_is_refused(world, tmp_path):
    """make grid SCHEDULER=slurm DRY_RUN=1 checks SET before anything: with or without data/."""
    proc, _ = call_make(world, "grid", "SCHEDULER=slurm", "DRY_RUN=1", "DATASETS=prostate",
                        f"SLURM_LOGS={tmp_path / 'logs'}", "SET=max_iter=3;cd;id>pwned", recorded=False)
    assert nothing_ran(world)
    assert proc.returncode == 2 and "max_iter='3;cd;id>pwned': expected int" in proc.stderr, proc.stderr


@pytest.mark.parametrize("target, variables", [
    ("train", ("DATASET=prostate", "ACT=relu", "SOLVER=sgd")), ("grid", ("DATASETS=prostate",)),
    ("reference", ("DATASET=prostate",)), ("thickslice", ("IN=scan.nii", "OUT=out.nii")),
    ("thickslice-validate", ())])
def test_set_and_layers_cannot_pass_an_option(world, target, variables):
    """SET=--force is a KEY=VALUE word after --, which the program refuses, never its --force
    (which replaces a run)."""
    proc, calls = call_make(world, target, *variables, "SET=--force", "LAYERS=--retrain")
    assert proc.returncode == 0, proc.stderr
    given = [c["argv"] for c in calls if "--force" in c["argv"]]
    assert given and all(a.index("--") < min(a.index("--force"), a.index("--retrain")) for a in given)


def test_a_planted_activation_of_thickslice_is_refused(world):
    """The issue's case: make thickslice ACT='rrelu;id;' ran id."""
    proc, _ = call_make(world, "thickslice", "IN=scan.nii", "OUT=out.nii", "ACT=rrelu;cd;id>pwned;",
                        recorded=False)
    assert nothing_ran(world)
    assert proc.returncode == 2 and "invalid choice: 'rrelu;cd;id>pwned;'" in proc.stderr


@pytest.mark.parametrize("target, variables, name", [
    ("upscale", ("IN=-scan.png", "OUT=x3.png", "REFERENCE=prostate"), "-scan.png"),
    ("upscale", ("IN=-scan.png", "OUT=-x3.png", "RUN=-run"), "-scan.png"),
    ("thickslice", ("IN=-scan.nii", "OUT=-out.nii"), "-scan.nii"),
    ("export", ("OUT=-net.onnx", "RUN=-run"), "-run")])
def test_a_name_starting_with_a_dash_is_a_name(world, target, variables, name):
    """Not an option: the program says in one line that the file is missing (no usage screen)."""
    proc, _ = call_make(world, target, *variables, recorded=False)
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("make")]
    assert proc.returncode == 2 and len(errors) == 1 and name in errors[0], proc.stderr
    assert "usage:" not in proc.stderr
