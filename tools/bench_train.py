"""Benchmark of one SRCNN training step: the harness's Caffe solver against a PyTorch CPU reference.

    python -m tools.bench_train [--act relu] [--solver sgd] [--iters 20] [--repeats 5]
                                [--threads N] [--warmup 3] [--layer-iters N] [--out bench/train_step.json]

Each engine runs in its own long-lived worker process (``--worker caffe|torch``, driven over a pipe
with one JSON line per command), so that its thread count is fixed by the environment before its
BLAS loads (OPENBLAS_NUM_THREADS for Caffe's OpenBLAS, torch.set_num_threads for torch). The parent
alternates the two: for each repeat, a block of ``--iters`` Caffe steps, then a block of ``--iters``
torch steps; only one worker computes at a time. Both train on the same 128 random 33x33 patches
(21x21 labels), written to a temporary HDF5 file that the generated train_val net reads.

Caffe's step is ``solver.step(1)`` (clear diffs, forward, backward, update); torch's is zero_grad,
forward, loss, backward, optimizer.step(). Afterwards the Caffe worker times every layer's forward
and backward (Net::ForwardFromTo / BackwardFromTo on one layer) and the solver update.

Results go to ``--out`` (atomically) and a one-table summary to stdout (tools/bench_summary.py).
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from core.atomic import write_json_atomic
from core.config import ACTIVATIONS, DEFAULT, ROOT, SOLVERS
from tools.bench_engines import CaffeEngine, TorchEngine, write_patches
from tools.bench_summary import summarize, summary_table

TORCH_MISSING = "bench: PyTorch is not installed: run `make bench` (it installs tools/setup/requirements-bench.txt into .venv)"


class BenchError(RuntimeError):
    """A failure reported to the user as one line."""


# ----------------------------------------------------------------------------------------------
# Worker side: one JSON line per command on stdin, one JSON line per answer on the saved stdout.


def serve(args):
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever the libraries print goes to stderr, never into the protocol
    sys.stdout = sys.stderr

    def send(obj):
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    try:
        if args.worker == "caffe":
            engine = CaffeEngine(DEFAULT, args.act, args.solver, args.workdir, args.listing, args.warmup)
        else:
            engine = TorchEngine(DEFAULT, args.act, args.solver, args.h5, args.threads, args.warmup)
        send({"ready": True, "info": engine.info()})
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["cmd"] == "block":
                send({"ms": engine.block(cmd["iters"])})
            elif cmd["cmd"] == "layers":
                send(engine.layers(cmd["iters"]))
            elif cmd["cmd"] == "peak":
                send(engine.peak())
            elif cmd["cmd"] == "quit":
                break
    except Exception as exc:  # reported to the parent, which prints one line
        send({"error": f"{type(exc).__name__}: {exc}"})
        raise
    return 0


# ----------------------------------------------------------------------------------------------
# Parent side


class Worker:
    """A long-lived ``python -m tools.bench_train --worker ENGINE`` process."""

    def __init__(self, engine, args, workdir, h5, listing):
        self.engine = engine
        env = dict(os.environ)
        threads = str(args.threads)
        env.update(OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        env.setdefault("GLOG_minloglevel", "2")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        cmd = [sys.executable, "-m", "tools.bench_train", "--worker", engine, "--act", args.act,
               "--solver", args.solver, "--threads", threads, "--warmup", str(args.warmup),
               "--workdir", str(workdir), "--h5", h5, "--listing", listing]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)

    def recv(self):
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise BenchError(f"bench: the {self.engine} worker exited with status {code} (its stderr is above)")
        answer = json.loads(line)
        if "error" in answer:
            raise BenchError(f"bench: the {self.engine} worker failed: {answer['error']}")
        return answer

    def call(self, obj):
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()
        return self.recv()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def check_torch():
    if importlib.util.find_spec("torch") is None:
        raise BenchError(TORCH_MISSING)


def run(args):
    """Run the benchmark; returns the result dict (also written to args.out)."""
    check_torch()
    cfg = DEFAULT
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        h5, listing = write_patches(tmp, cfg)
        workers = []
        try:
            caffe_blocks, torch_blocks = [], []
            caffe_w = torch_w = None
            for repeat in range(args.repeats):
                # Fresh worker processes for every repeat unless --same-workers: PyTorch's speed
                # differs from process to process here (medians of 53 to 110 ms/iter seen), so
                # one process pair would sample one draw of it. Started one at a time so that
                # the warm-ups do not overlap either.
                if repeat == 0 or not args.same_workers:
                    for w in workers:
                        w.close()
                    workers.clear()
                    caffe_w = Worker("caffe", args, tmp, h5, listing)
                    workers.append(caffe_w)
                    caffe_info = caffe_w.recv()["info"]
                    torch_w = Worker("torch", args, tmp, h5, listing)
                    workers.append(torch_w)
                    torch_info = torch_w.recv()["info"]
                caffe_blocks.append(caffe_w.call({"cmd": "block", "iters": args.iters})["ms"])
                torch_blocks.append(torch_w.call({"cmd": "block", "iters": args.iters})["ms"])
            torch_w.close()  # idle from here on; the layer timing and the peak need the CPU alone
            layers = caffe_w.call({"cmd": "layers", "iters": args.layer_iters or args.iters})
            peak = caffe_w.call({"cmd": "peak"})
        finally:
            for w in workers:
                w.close()
    return summarize(args, cfg, caffe_blocks, torch_blocks, layers, caffe_info, torch_info,
                     load_before, os.getloadavg(), peak)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.bench_train", description=__doc__.split("\n\n")[0])
    p.add_argument("--act", default="relu", choices=ACTIVATIONS)
    p.add_argument("--solver", default="sgd", choices=tuple(SOLVERS))
    p.add_argument("--iters", type=int, default=20, help="timed steps per block (default 20)")
    p.add_argument("--repeats", type=int, default=5, help="alternating caffe/torch blocks (default 5)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="threads of both engines (default: cpu count)")
    p.add_argument("--warmup", type=int, default=3,
                   help="untimed steps per engine and worker process first (default 3)")
    p.add_argument("--same-workers", action="store_true",
                   help="one worker process per engine for all repeats (default: fresh ones per repeat)")
    p.add_argument("--layer-iters", type=int, default=0,
                   help="iterations of Caffe's per-layer timing (default: --iters)")
    p.add_argument("--out", default="bench/train_step.json", help="JSON output (relative to the repo root)")
    p.add_argument("--worker", choices=("caffe", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    p.add_argument("--h5", help=argparse.SUPPRESS)
    p.add_argument("--listing", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for key in ("iters", "repeats", "threads"):
        if getattr(args, key) < 1:
            p.error(f"--{key} must be at least 1")
    if args.warmup < 0 or args.layer_iters < 0:
        p.error("--warmup and --layer-iters must not be negative")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return serve(args)
    try:
        result = run(args)
    except BenchError as exc:
        print(exc, file=sys.stderr)
        return 1
    out = Path(args.out)
    out = out if out.is_absolute() else ROOT / out
    write_json_atomic(out, result)
    print(summary_table(result))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
