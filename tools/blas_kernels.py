"""`make test-kernels`: the tests marked ``blas`` again, under OpenBLAS kernels the CPU did not pick.

    python -m tools.blas_kernels [--cores Haswell Zen SkylakeX Sandybridge] [--all-tests] [-- PYTEST ARGS]

OpenBLAS picks its kernels (its "core type") for the CPU when it loads, and sums a GEMM's products
in the order those kernels add them. A test whose promise depends on that order passes on one
machine and fails on another (docs/exactness.md). This runs those tests (``-m blas``; the whole
suite with ``--all-tests``) in child processes, each with OPENBLAS_CORETYPE set to one core type,
in that child only: the project never sets it otherwise. Without ``--cores`` it takes one core
type older than the one this process runs: an older kernel runs on a newer CPU, a newer one may
not (which is why some machines pin the variable). A core type this CPU lacks the instructions
for is skipped with the reason; a child in which OpenBLAS did not take the core type asked for
fails (OpenBLAS ignores a name it does not know).
"""
import os
import subprocess
import sys

import numpy  # noqa: F401  (loads the OpenBLAS that blas_info reports, as Caffe does)

from core.args import command_line
from core.config import ROOT
from core.machine import blas_info, cpu_flags

# The instructions each core type's kernels use (/proc/cpuinfo's names), so a CPU without them is
# not asked to run them (SIGILL).
CORE_TYPE_NEEDS = {
    "Nehalem": ("sse4_2",),
    "Sandybridge": ("avx",),
    "Haswell": ("avx2", "fma"),
    "Zen": ("avx2", "fma"),
    "SkylakeX": ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"),
    "Cooperlake": ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl", "avx512_bf16"),
}
# One core type older than each (a different kernel family, safe on the newer CPU): CI's second.
OLDER = {"SapphireRapids": "Haswell", "Cooperlake": "Haswell", "SkylakeX": "Haswell",
         "Zen": "Sandybridge", "Haswell": "Sandybridge", "Sandybridge": "Nehalem"}
ENV = "OPENBLAS_CORETYPE"
PROBE = "import numpy; from core.machine import blas_info; print(blas_info().get('core'))"


def missing_instructions(core, flags):
    """The instructions core type ``core`` needs that ``flags`` lack."""
    return [n for n in CORE_TYPE_NEEDS[core] if n not in flags]


def child_env(core):
    env = dict(os.environ)
    env[ENV] = core
    return env


def core_taken(core):
    """The core type OpenBLAS runs in a child asked for ``core``."""
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=child_env(core),
                          capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else f"error: {done.stderr.strip()[-200:]}"


def run_core(core, pytest_args):
    """'passed', 'failed' or 'skipped: <why>' for the tests under core type ``core``."""
    missing = missing_instructions(core, cpu_flags())
    if missing:
        return f"skipped: this CPU lacks {' '.join(missing)}"
    taken = core_taken(core)
    if taken != core:
        return f"failed: OpenBLAS ran {taken} when asked for {core}"
    print(f"test-kernels: {ENV}={core} (in the child processes only): pytest {' '.join(pytest_args)}",
          flush=True)
    done = subprocess.run([sys.executable, "-m", "pytest", *pytest_args], cwd=ROOT, env=child_env(core))
    if done.returncode == 5:  # no test selected: nothing marked, which is a fault here
        return "failed: no test is marked blas"
    return "passed" if done.returncode == 0 else "failed"


def parse(argv):
    p = command_line("tools.blas_kernels", short="test-kernels", description=__doc__.splitlines()[0])
    p.add_argument("--cores", nargs="+", metavar="CORE", choices=list(CORE_TYPE_NEEDS),
                   help=f"core types to run under (default: one older than this process's): "
                        f"{', '.join(CORE_TYPE_NEEDS)}")
    p.add_argument("--all-tests", action="store_true", help="the whole suite, not only -m blas")
    p.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    return p.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    found = blas_info()
    if found.get("library") != "OpenBLAS":
        print(f"test-kernels: this process's BLAS is not OpenBLAS ({found}): nothing to vary")
        return 0
    here = found["core"]
    cores = args.cores or [OLDER.get(here, "Sandybridge")]
    print(f"test-kernels: OpenBLAS {found['version']} runs {here} here "
          f"({ENV}={os.environ.get(ENV, 'unset')}); under: {' '.join(cores)}")
    pytest_args = ([] if args.all_tests else ["-m", "blas"]) + ["-q", "-p", "no:cacheprovider"]
    results = {core: run_core(core, pytest_args + args.pytest_args) for core in cores}
    for core, result in results.items():
        print(f"test-kernels: {core}: {result}")
    return 1 if any(r.startswith("failed") for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
