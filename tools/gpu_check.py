"""`make gpu-check`: Caffe on this machine's GPU, checked against the CPU in a few minutes.

    python -m tools.gpu_check [--gpu N] [--iters 200] [--time-iters 50] [--out bench/gpu_check.json]

1. Without a GPU (``nvidia-smi -L`` lists none) it says so in one line and exits 0.
2. The build: a CPU-only Caffe, or a GPU it cannot use, is one line and exit 1.
3. ``caffe device_query -gpu N``, as Caffe prints it.
4. The paper's net (RReLU + Nesterov) trained ``--iters`` steps on the bench's random patches, on
   the CPU and then on the GPU, from the same seed and with the trainer's per-iteration reseeding
   (RReLU's slopes are drawn on the host either way): the loss at every iteration must agree within
   ``LOSS_RTOL`` (the GPU sums in another order, so bit-equality is not expected).
5. Step times side by side: Caffe on the CPU, Caffe on the GPU, and PyTorch on the same GPU when a
   CUDA torch is installed (``make bench`` installs one).

The numbers go to ``--out`` (JSON, atomically) and a short table to stdout.
"""
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")

from core.args import command_line  # noqa: E402
from core.atomic import write_json_atomic  # noqa: E402
from core.config import DEFAULT, ROOT  # noqa: E402
from core.device import DeviceError, check_gpu, machine_gpus  # noqa: E402
from core.names import PAPER_NET  # noqa: E402

LOSS_RTOL = 1e-2  # GPU vs CPU loss, per iteration, relative
ACT, SOLVER = PAPER_NET


def loss_curve(workdir, listing, iters, gpu):
    """Losses of ``iters`` training steps on the CPU (gpu None) or GPU ``gpu``, reseeded per
    iteration as tools.train does."""
    import caffe

    from tools.bench_engines import CaffeEngine
    from tools.train_loop import iteration_seed

    caffe.set_random_seed(DEFAULT.random_seed)  # the weight init
    engine = CaffeEngine(DEFAULT, ACT, SOLVER, workdir, listing, warmup=0, gpu=gpu)
    losses = []
    for _ in range(iters):
        caffe.set_random_seed(iteration_seed(DEFAULT.random_seed, engine.solver.iter))
        engine.solver.step(1)
        losses.append(float(engine.net.blobs["loss"].data))
    return losses


def step_ms(engine, iters):
    """Median ms of ``iters`` steps after the engine's warm-up."""
    return statistics.median(engine.block(iters))


def torch_gpu_ms(h5, gpu, iters):
    """PyTorch's step on the same GPU, or a reason string when there is no CUDA torch."""
    try:
        import torch
    except ImportError:
        return "torch is not installed (make bench installs it)"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device"
    from tools.bench_engines import TorchEngine
    engine = TorchEngine(DEFAULT, ACT, SOLVER, h5, threads=1, device=f"cuda:{gpu}")
    return step_ms(engine, iters)


def device_query(gpu):
    """``caffe device_query -gpu N``'s lines, without glog's prefixes."""
    caffe_bin = ROOT / ".venv" / "bin" / "caffe"
    out = subprocess.run([str(caffe_bin), "device_query", "-gpu", str(gpu)], capture_output=True,
                         text=True, env={**os.environ, "GLOG_logtostderr": "1",
                                         "GLOG_minloglevel": "0"})
    return [line.split("] ", 1)[-1] for line in out.stderr.splitlines() if "] " in line]


def check(args):
    """The steps of the module docstring; returns the result dict (raises DeviceError)."""
    from tools.bench_engines import CaffeEngine, write_patches

    check_gpu(args.gpu)
    result = {"gpu": args.gpu, "device_query": device_query(args.gpu)}
    print("\n".join(result["device_query"]))
    with tempfile.TemporaryDirectory() as tmp:
        h5, listing = write_patches(tmp, DEFAULT)
        curves = {}
        for name, gpu in (("cpu", None), ("gpu", args.gpu)):
            Path(tmp, name).mkdir()
            curves[name] = loss_curve(Path(tmp, name), listing, args.iters, gpu)
        rel = [abs(g - c) / abs(c) for c, g in zip(curves["cpu"], curves["gpu"])]
        result["loss"] = {"iters": args.iters, "cpu": curves["cpu"], "gpu": curves["gpu"],
                          "max_rel_diff": max(rel), "rtol": LOSS_RTOL, "ok": max(rel) <= LOSS_RTOL}
        times = {}
        for name, gpu in (("caffe_cpu", None), ("caffe_gpu", args.gpu)):
            Path(tmp, name).mkdir()
            times[name] = step_ms(CaffeEngine(DEFAULT, ACT, SOLVER, Path(tmp, name), listing,
                                              gpu=gpu), args.time_iters)
        times["torch_gpu"] = torch_gpu_ms(h5, args.gpu, args.time_iters)
        result["step_ms"] = times
    return result


def report(result):
    """The table printed after the device query."""
    loss, times = result["loss"], result["step_ms"]
    lines = [f"loss, {loss['iters']} steps of {ACT} + {SOLVER}, GPU vs CPU: max relative difference "
             f"{loss['max_rel_diff']:.2e} (tolerance {loss['rtol']:.0e}): "
             f"{'ok' if loss['ok'] else 'FAILED'}",
             f"step, median: Caffe CPU {times['caffe_cpu']:.2f} ms, Caffe GPU "
             f"{times['caffe_gpu']:.3f} ms ({times['caffe_cpu'] / times['caffe_gpu']:.1f}x)"]
    torch_ms = times["torch_gpu"]
    lines.append(f"      PyTorch GPU {torch_ms:.3f} ms (Caffe/PyTorch {times['caffe_gpu'] / torch_ms:.2f})"
                 if isinstance(torch_ms, float) else f"      PyTorch GPU: not measured ({torch_ms})")
    return "\n".join(lines)


def parse_args(argv=None):
    p = command_line("tools.gpu_check", short="gpu-check", description=__doc__.splitlines()[0])
    p.add_argument("--gpu", type=int, default=0, metavar="N", help="device number (default 0)")
    p.add_argument("--iters", type=int, default=200, help="training steps compared (default 200)")
    p.add_argument("--time-iters", type=int, default=50, help="timed steps (default 50)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "gpu_check.json")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    gpus = machine_gpus()
    if not gpus:
        print("gpu-check: no GPU on this machine (nvidia-smi lists none): nothing to check")
        return 0
    print("\n".join(gpus))
    try:
        result = check(args)
    except DeviceError as e:
        print(f"gpu-check: error: {e}", file=sys.stderr)
        return 1
    write_json_atomic(args.out, result)
    print(report(result))
    print(f"gpu-check: {args.out}")
    return 0 if result["loss"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
