"""Benchmark of the SRCNN training step: the harness's Caffe solver against a PyTorch CPU reference,
for several configurations side by side in one run (``CONFIGS``: ReLU + SGD, the paper's baseline;
RReLU + Nesterov, the paper's net, with RReLU from stock layers and from our fused layer).

    python -m tools.bench_train [--configs relu_sgd,rrelu_nesterov,...] [--iters 20] [--repeats 5]
                                [--threads N] [--warmup 3] [--layer-iters N] [--out bench/train_step.json]

Each engine and configuration runs in its own long-lived worker process (``--worker caffe|torch``,
driven over a pipe with one JSON line per command), so that its thread count is fixed by the
environment before its BLAS loads (OPENBLAS_NUM_THREADS for Caffe's OpenBLAS, torch.set_num_threads
for torch). The parent takes them in turn: for each repeat, a block of ``--iters`` Caffe steps of
every configuration, then a block of ``--iters`` torch steps of every (activation, solver) pair;
only one worker computes at a time. All train on the same 128 random 33x33 patches (21x21
labels), written to a temporary HDF5 file that the generated train_val nets read.

Caffe's step is ``solver.step(1)`` (clear diffs, forward, backward, update); torch's is zero_grad,
forward, loss, backward, optimizer.step(). Afterwards the Caffe worker times every layer's forward
and backward (Net::ForwardFromTo / BackwardFromTo on one layer) and the solver update.

Results go to ``--out`` (atomically; one key per configuration, and ``comparison``: each one's
step against ReLU + SGD's, per repeat too) and a summary to stdout (tools/bench_summary.py).
"""
import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from core.args import command_line
from core.atomic import write_json_atomic
from core.config import DEFAULT, ROOT
from tools.bench_engines import CaffeEngine, TorchEngine, write_patches
from tools.bench_summary import compare, summarize, summary_tables

# What `make bench` times: name -> (activation, solver, config overrides).
CONFIGS = {
    "relu_sgd": ("relu", "sgd", ()),  # the paper's baseline; the reference of the comparison
    "rrelu_nesterov": ("rrelu", "nesterov", ("rrelu_layer=graph",)),  # the paper's net
    "rrelu_nesterov_fused": ("rrelu", "nesterov", ("rrelu_layer=fused",)),  # ... one RReLU layer
    # Activations inside conv1 and conv2 (act_layer=conv, patch 0011), for both nets
    "relu_sgd_conv": ("relu", "sgd", ("act_layer=conv",)),
    "rrelu_nesterov_conv": ("rrelu", "nesterov", ("act_layer=conv",)),
}

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
        act, solver, overrides = CONFIGS[args.config]
        cfg = DEFAULT.with_overrides(overrides)
        gpu = args.worker_gpu  # None: the CPU
        if args.worker == "caffe":
            engine = CaffeEngine(cfg, act, solver, args.workdir, args.listing, args.warmup, gpu=gpu)
        else:
            engine = TorchEngine(cfg, act, solver, args.h5, args.threads, args.warmup,
                                 device="cpu" if gpu is None else f"cuda:{gpu}")
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

    def __init__(self, engine, config, args, workdir, h5, listing, gpu=None):
        self.engine = f"{engine} {config}" + ("" if gpu is None else f" (GPU {gpu})")
        env = dict(os.environ)
        threads = str(args.threads)
        env.update(OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        env.setdefault("GLOG_minloglevel", "2")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        cmd = [sys.executable, "-m", "tools.bench_train", "--worker", engine, "--config", config,
               "--threads", threads, "--warmup", str(args.warmup),
               "--workdir", str(workdir), "--h5", h5, "--listing", listing,
               *([] if gpu is None else ["--worker-gpu", str(gpu)])]
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


def available(names):
    """``names`` without the configurations this Caffe cannot build (a CAFFE_ROOT of the user's, or
    a build without our RReLU layer, patch 0010, or without activations inside convolutions,
    patch 0011), each said in one line."""
    import caffe

    from core.nets import conv_activation_supported

    missing = {"rrelu_layer=fused": ("RReLU" in caffe.layer_type_list(), "no RReLU layer (0010)"),
               "act_layer=conv": (conv_activation_supported(), "no activations inside convolutions (0011)")}
    kept = list(names)
    for override, (present, what) in missing.items():
        if present:
            continue
        left = [n for n in kept if override in CONFIGS[n][2]]
        if left:
            print(f"bench: this Caffe has {what} (tools/setup/patches/): {', '.join(left)} left out",
                  file=sys.stderr)
        kept = [n for n in kept if n not in left]
    if not kept:
        raise BenchError("bench: no configuration left to time")
    return kept


def bench_gpu(args):
    """The GPU to time on, or None: --gpu, else GPU 0 when nvidia-smi lists one and this Caffe can
    compute there (a CPU-only build cannot: then the GPU column is left out, said in one line)."""
    from core.device import DeviceError, check_gpu, machine_gpus
    if args.gpu is not None and args.gpu < 0:
        return None
    if args.gpu is None and not machine_gpus():
        return None
    gpu = args.gpu or 0
    try:
        check_gpu(gpu)
    except DeviceError as e:
        if args.gpu is not None:
            raise BenchError(f"bench: {e}") from None
        print(f"bench: no GPU column: {e}", file=sys.stderr)
        return None
    return gpu


def time_on_gpu(args, names, torch_names, tmp, h5, listing):
    """{(engine, name): blocks} of every configuration on the GPU (one worker each, kept for all
    repeats: a GPU's speed does not change from process to process as this CPU's does); {} without
    a GPU. Torch's blocks are missing when its build has no CUDA."""
    gpu = bench_gpu(args)
    if gpu is None:
        return {}
    blocks = {}
    for engine, members in (("caffe", names), ("torch", torch_names)):
        for name in members:
            workdir = Path(tmp, f"{engine}_{name}_gpu")
            workdir.mkdir(exist_ok=True)
            worker = Worker(engine, name, args, workdir, h5, listing, gpu=gpu)
            try:
                worker.recv()
                blocks[engine, name] = [worker.call({"cmd": "block", "iters": args.iters})["ms"]
                                        for _ in range(args.repeats)]
            except BenchError as e:
                if engine == "caffe":
                    raise
                print(f"bench: no PyTorch GPU time: {e}", file=sys.stderr)
            finally:
                worker.close()
    blocks["device"] = gpu
    return blocks


def gpu_column(cpu_result, gpu_blocks, name, torch_name):
    """One configuration's GPU figures: medians, Caffe's speed-up over its CPU step, Caffe/torch."""
    caffe_ms = statistics.median(t for b in gpu_blocks["caffe", name] for t in b)
    out = {"device": gpu_blocks["device"], "caffe_ms": caffe_ms,
           "caffe_ms_all": [t for b in gpu_blocks["caffe", name] for t in b],
           "caffe_speedup_over_cpu": cpu_result["caffe_ms"] / caffe_ms}
    if ("torch", torch_name) in gpu_blocks:
        torch_ms = statistics.median(t for b in gpu_blocks["torch", torch_name] for t in b)
        out.update(torch_ms=torch_ms, ratio=caffe_ms / torch_ms)
    return out


def torch_partners(names):
    """config name -> the config whose torch worker it shares (torch has no fused RReLU: the same
    activation and solver time the same)."""
    return {name: next(other for other in names if CONFIGS[other][:2] == CONFIGS[name][:2])
            for name in names}


def run(args):
    """Run the benchmark; returns the result dict (also written to args.out)."""
    check_torch()
    names = available(args.configs)
    partner = torch_partners(names)
    torch_names = list(dict.fromkeys(partner.values()))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        h5, listing = write_patches(tmp, DEFAULT)
        caffe_w, torch_w, info = {}, {}, {}
        blocks = {("caffe", n): [] for n in names} | {("torch", n): [] for n in torch_names}
        try:
            for repeat in range(args.repeats):
                # Fresh worker processes for every repeat unless --same-workers: PyTorch's speed
                # differs from process to process here (medians of 53 to 110 ms/iter seen), so
                # one process per engine would sample one draw of it. Started one at a time so
                # that the warm-ups do not overlap either.
                if repeat == 0 or not args.same_workers:
                    for w in [*caffe_w.values(), *torch_w.values()]:
                        w.close()
                    for engine, pool, members in (("caffe", caffe_w, names), ("torch", torch_w, torch_names)):
                        for name in members:
                            workdir = Path(tmp, f"{engine}_{name}")
                            workdir.mkdir(exist_ok=True)
                            pool[name] = Worker(engine, name, args, workdir, h5, listing)
                            info[engine, name] = pool[name].recv()["info"]
                for engine, pool in (("caffe", caffe_w), ("torch", torch_w)):
                    for name, worker in pool.items():
                        blocks[engine, name].append(worker.call({"cmd": "block", "iters": args.iters})["ms"])
            for w in torch_w.values():
                w.close()  # idle from here on; the layer timing and the peak need the CPU alone
            gpu_blocks = time_on_gpu(args, names, torch_names, tmp, h5, listing)
            layers = {n: caffe_w[n].call({"cmd": "layers", "iters": args.layer_iters or args.iters})
                      for n in names}
            peak = caffe_w[names[0]].call({"cmd": "peak"})
        finally:
            for w in [*caffe_w.values(), *torch_w.values()]:
                w.close()
    load_after = os.getloadavg()
    result = {}
    for name in names:
        act, solver, overrides = CONFIGS[name]
        result[name] = summarize(argparse.Namespace(**vars(args), act=act, solver=solver),
                                 DEFAULT.with_overrides(overrides), blocks["caffe", name],
                                 blocks["torch", partner[name]], layers[name], info["caffe", name],
                                 info["torch", partner[name]], load_before, load_after, peak)
        result[name]["overrides"] = list(overrides)
        if gpu_blocks:
            result[name]["gpu"] = gpu_column(result[name], gpu_blocks, name, partner[name])
    result["comparison"] = compare(result, {n: blocks["caffe", n] for n in names})
    return result


def parse_args(argv=None):
    p = command_line("tools.bench_train", short="bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default=",".join(CONFIGS),
                   help=f"comma-separated, from {', '.join(CONFIGS)} (default: all)")
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
    p.add_argument("--config", choices=tuple(CONFIGS), help=argparse.SUPPRESS)
    p.add_argument("--worker-gpu", type=int, help=argparse.SUPPRESS)
    p.add_argument("--gpu", type=int, metavar="N", help="also time both engines on GPU N (default: "
                   "GPU 0 when nvidia-smi lists one and this Caffe can use it; -1: never)")
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    p.add_argument("--h5", help=argparse.SUPPRESS)
    p.add_argument("--listing", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for key in ("iters", "repeats", "threads"):
        if getattr(args, key) < 1:
            p.error(f"--{key} must be at least 1")
    if args.warmup < 0 or args.layer_iters < 0:
        p.error("--warmup and --layer-iters must not be negative")
    if not args.worker:
        args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
        unknown = [c for c in args.configs if c not in CONFIGS]
        if unknown or not args.configs:
            p.error(f"--configs: unknown {', '.join(unknown) or '(none given)'}; choose from "
                    f"{', '.join(CONFIGS)}")
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
    print(summary_tables(result))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
