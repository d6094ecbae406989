"""Where Caffe computes: the CPU, or GPU N of a CUDA build (``make setup GPU=1``).

Caffe aborts the whole process (LOG(FATAL), no exception) when it is asked for a GPU that the build
or the machine lacks, so ``check_gpu`` asks first, in a child process, and turns the answer into
one line for the user.
"""
import os
import subprocess
import sys

import caffe

from core.errors import DataError

# The child selects the device and runs a 3x3 convolution on it (device memory and cuBLAS): a
# CPU-only build dies with "Cannot use GPU in CPU-only Caffe", a GPU build without a usable device
# dies in cudaSetDevice, cudaMalloc or cuBLAS.
_PROBE = """
import sys, tempfile, caffe
caffe.set_device(int(sys.argv[1]))
caffe.set_mode_gpu()
with tempfile.NamedTemporaryFile("w", suffix=".prototxt") as f:
    f.write('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 '
            'dim: 8 dim: 8 } } } layer { name: "conv" type: "Convolution" bottom: "data" '
            'top: "conv" convolution_param { num_output: 2 kernel_size: 3 } }')
    f.flush()
    net = caffe.Net(f.name, caffe.TEST)
    net.forward()
print("ok")
"""


class DeviceError(DataError):
    """The GPU asked for cannot be used (CPU-only build, no such device, no driver): one line."""


def probe_message(stderr, device):
    """The user's line for a failed probe, from Caffe's fatal message on the child's stderr."""
    text = " ".join(stderr.split())
    if "CPU-only Caffe" in text:
        return ("this Caffe is a CPU-only build: run 'make setup GPU=1' for one with CUDA, or drop "
                "--gpu / solver_mode=GPU")
    for marker in ("Check failed: error == cudaSuccess", "CUDA"):
        if marker in text:
            reason = text[text.index(marker):].split(" ***")[0][:160]
            return f"GPU {device} cannot be used ({reason}); 'nvidia-smi -L' lists the GPUs"
    return f"GPU {device} cannot be used (Caffe: {text[-160:] or 'no message'})"


def check_gpu(device):
    """Raise DeviceError unless this Caffe can compute on GPU ``device`` of this machine."""
    if not isinstance(device, int) or device < 0:
        raise DeviceError(f"--gpu takes a device number 0, 1, ..., not {device!r}")
    child = subprocess.run([sys.executable, "-c", _PROBE, str(device)], capture_output=True,
                           text=True, env={**os.environ, "GLOG_minloglevel": "2"})
    if child.returncode != 0 or "ok" not in child.stdout:
        raise DeviceError(probe_message(child.stderr, device))


def use_device(device=None):
    """Compute on the CPU (``device`` None) or on GPU ``device``, checked first (DeviceError)."""
    if device is None:
        caffe.set_mode_cpu()
        return
    check_gpu(device)
    caffe.set_device(device)
    caffe.set_mode_gpu()


def machine_gpus():
    """The GPUs ``nvidia-smi -L`` lists ("GPU 0: NVIDIA H100 ..."); [] without a driver or GPU."""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.startswith("GPU ")]
