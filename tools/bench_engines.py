"""The benchmark's two engines, each timed in its own worker process (tools/bench_train.py drives
them): the harness's Caffe solver and the PyTorch CPU reference, on the same random patches.
Usable in-process by the tests."""
import ctypes
import os
import re
import statistics
import time
from pathlib import Path


# ----------------------------------------------------------------------------------------------
# Shared data


def write_patches(directory, cfg, seed=0):
    """An HDF5 file of exactly batch_train random patches (data 33x33, label 21x21) and its list
    file for Caffe's HDF5Data; returns (h5 path, list path)."""
    import h5py
    import numpy as np

    rng = np.random.RandomState(seed)
    directory = Path(directory)
    h5 = directory / "patches.h5"
    with h5py.File(h5, "w") as f:
        f["data"] = rng.rand(cfg.batch_train, 1, cfg.patch, cfg.patch).astype(np.float32)
        f["label"] = rng.rand(cfg.batch_train, 1, cfg.label, cfg.label).astype(np.float32)
    listing = directory / "list.txt"
    listing.write_text(f"{h5}\n")
    return str(h5), str(listing)


def loaded_libraries(pattern=r"^lib\w*(blas|lapack|mkl|omp)"):
    """Real paths of the BLAS/LAPACK/OpenMP shared libraries mapped into this process (by file name)."""
    found = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split(maxsplit=5)[-1].strip() if len(line.split()) >= 6 else ""
                if path.startswith("/") and re.search(pattern, Path(path).name, re.I):
                    real = os.path.realpath(path)
                    if real not in found:
                        found.append(real)
    except OSError:
        pass
    return found


def milliseconds(start):
    return (time.perf_counter() - start) * 1000.0


# ----------------------------------------------------------------------------------------------
# Engines (each lives in its own worker process; usable in-process by tests)


class CaffeEngine:
    """The harness's Caffe training step: the trainer's generated train_val net and solver
    (core.run_files.trainable_net_files) over the bench's HDF5 patches, under a pycaffe solver."""

    name = "caffe"

    def __init__(self, cfg, act, solver, workdir, listing, warmup=3, gpu=None):
        import caffe

        from core.device import use_device
        from core.run_files import trainable_net_files

        use_device(gpu)  # the CPU, or GPU ``gpu`` (make gpu-check)
        # TRAIN and TEST read the same patches; as the trainer's, the solver never tests,
        # snapshots or logs inside the timed steps.
        files = trainable_net_files(workdir, cfg, act, solver, listing, dataset="bench")
        self.solver = caffe.get_solver(str(files["solver"]))
        self.net = self.solver.net
        for _ in range(warmup):
            self.solver.step(1)

    def block(self, iters):
        """Per-iteration times (ms) of ``iters`` calls of solver.step(1); reading the loss waits
        for a GPU to finish the step."""
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            self.solver.step(1)
            float(self.net.blobs["loss"].data)
            times.append(milliseconds(start))
        return times

    def layers(self, iters):
        """Median ms of each layer's forward and backward, and of the solver's other parts, over
        ``iters`` training iterations run layer by layer (clear diffs, forward, backward, update)."""
        net = self.net
        names = list(net._layer_names)
        types = [layer.type for layer in net.layers]
        fwd = [[] for _ in names]
        bwd = [[] for _ in names]
        clear, update = [], []
        for _ in range(iters):
            start = time.perf_counter()
            net.clear_param_diffs()
            clear.append(milliseconds(start))
            for i in range(len(names)):
                start = time.perf_counter()
                net._forward(i, i)
                fwd[i].append(milliseconds(start))
            for i in reversed(range(len(names))):
                start = time.perf_counter()
                net._backward(i, i)  # skips layers that need no backward, as in training
                bwd[i].append(milliseconds(start))
            start = time.perf_counter()
            self.solver.apply_update()
            update.append(milliseconds(start))
        per_layer = {name: {"type": kind, "forward": statistics.median(f), "backward": statistics.median(b)}
                     for name, kind, f, b in zip(names, types, fwd, bwd)}
        parts = {"clear_param_diffs": statistics.median(clear),
                 "forward": sum(v["forward"] for v in per_layer.values()),
                 "backward": sum(v["backward"] for v in per_layer.values()),
                 "apply_update": statistics.median(update)}
        parts["sum"] = sum(parts.values())
        return {"per_layer_ms": per_layer, "parts_ms": parts}

    def peak(self, size=2048, repeats=5):
        """The machine's attainable dense fp32 rate: best GFLOP/s of ``repeats`` float32
        ``size`` x ``size`` matrix products by numpy, whose BLAS is the OpenBLAS Caffe uses,
        with the same threads."""
        import numpy as np

        a, b = (np.random.RandomState(i).rand(size, size).astype(np.float32) for i in (0, 1))
        np.dot(a, b)  # warm-up: thread start, page faults
        best = None
        for _ in range(repeats):
            start = time.perf_counter()
            np.dot(a, b)
            ms = milliseconds(start)
            best = ms if best is None else min(best, ms)
        return {"gflops": 2 * size ** 3 / 1e9 / (best / 1e3), "size": size, "repeats": repeats}

    def info(self):
        info = {"OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
                "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                "libraries": loaded_libraries()}
        try:
            lib = ctypes.CDLL("libopenblas.so.0")  # the copy libcaffe already loaded
            lib.openblas_get_config.restype = ctypes.c_char_p
            lib.openblas_get_corename.restype = ctypes.c_char_p
            info["openblas_get_num_threads"] = lib.openblas_get_num_threads()
            info["openblas_config"] = lib.openblas_get_config().decode()
            info["openblas_core"] = lib.openblas_get_corename().decode()
        except (OSError, AttributeError):
            pass
        return info


class TorchEngine:
    """The PyTorch CPU reference step (tools.torch_reference) on the same patches."""

    name = "torch"

    def __init__(self, cfg, act, solver, h5, threads, warmup=3, device="cpu"):
        import h5py
        import torch

        from tools.torch_reference import TrainStep

        torch.set_num_threads(threads)
        with h5py.File(h5, "r") as f:
            data, label = f["data"][:cfg.batch_train], f["label"][:cfg.batch_train]
        self.torch = torch
        self.step = TrainStep(cfg, act, solver, data, label, device=device)
        for _ in range(warmup):
            self.step()

    def block(self, iters):
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            self.step()
            times.append(milliseconds(start))
        return times

    def info(self):
        torch = self.torch
        config = torch.__config__.show()
        blas = re.search(r"BLAS_INFO=(\w+)", config)
        return {"set_num_threads": torch.get_num_threads(),
                "interop_threads": torch.get_num_interop_threads(),
                "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                "torch_version": torch.__version__,
                "blas": blas.group(1) if blas else "unknown",
                "mkldnn": bool(torch.backends.mkldnn.is_available()),
                "libraries": loaded_libraries()}
