"""Assemble a CUDA toolkit root from PyPI's CUDA component wheels (`make setup GPU=1`).

Usage: python3 cuda_toolkit.py DEST WHEEL...

Every wheel holds its part of the toolkit under ``nvidia/cu13/`` (bin/, include/, lib/, nvvm/), the
layout of an installed toolkit: they are unpacked side by side into DEST, with the executable bits
that the wheels record. Then come the links a toolkit installer makes and the wheels leave out:
``lib64`` (CMake's FindCUDA and nvcc.profile look there), ``targets/x86_64-linux/{include,lib}``
(nvcc.profile's -I/-L) and the unversioned ``libX.so`` names that the linker and FindCUDA look for.
Fails with one line when a file the Caffe build needs is missing. Nothing outside DEST is touched.
"""
import os
import sys
import zipfile

PREFIX = "nvidia/cu13/"
# What the Caffe build needs: nvcc and the tools it runs, the runtime, cuBLAS, cuRAND and Thrust/CUB.
REQUIRED = [
    "bin/nvcc", "bin/nvcc.profile", "bin/cudafe++", "bin/ptxas", "bin/fatbinary", "bin/nvlink",
    "bin/bin2c", "nvvm/bin/cicc", "nvvm/libdevice/libdevice.10.bc", "include/crt/host_config.h",
    "include/cuda_runtime.h", "include/cublas_v2.h", "include/curand.h",
    "include/cccl/thrust/version.h", "include/cccl/cub/version.cuh",
    "lib/libcudart.so.13", "lib/libcudart_static.a", "lib/libcublas.so.13", "lib/libcublasLt.so.13",
    "lib/libcurand.so.10",
]


def unpack(wheel, dest):
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if info.is_dir() or not info.filename.startswith(PREFIX):
                continue
            rel = info.filename[len(PREFIX):]
            path = os.path.join(dest, rel)
            if os.path.exists(path):
                sys.exit(f"cuda_toolkit: {rel} is in two wheels ({os.path.basename(wheel)})")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with zf.open(info) as src, open(path, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            mode = (info.external_attr >> 16) & 0o777
            os.chmod(path, 0o755 if mode & 0o100 else 0o644)


def link(target, name):
    if not os.path.lexists(name):
        os.symlink(target, name)


def main(dest, wheels):
    os.makedirs(dest, exist_ok=True)
    for wheel in wheels:
        unpack(wheel, dest)
    missing = [rel for rel in REQUIRED if not os.path.exists(os.path.join(dest, rel))]
    if missing:
        sys.exit(f"cuda_toolkit: the wheels lack {', '.join(missing)}")
    lib = os.path.join(dest, "lib")
    link("lib", os.path.join(dest, "lib64"))
    os.makedirs(os.path.join(dest, "targets", "x86_64-linux"), exist_ok=True)
    for sub in ("include", "lib"):
        link(os.path.join("..", "..", sub), os.path.join(dest, "targets", "x86_64-linux", sub))
    for name in sorted(os.listdir(lib)):  # libcublas.so.13 -> libcublas.so
        stem, sep, version = name.partition(".so.")
        if sep and version.isdigit():
            link(name, os.path.join(lib, stem + ".so"))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__.strip().splitlines()[2])
    main(sys.argv[1], sys.argv[2:])
