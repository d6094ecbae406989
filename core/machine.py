"""The machine a number was computed on: the CPU model and the BLAS that summed its products.

Caffe's convolutions are GEMMs, and a GEMM's float sums come out in the order its kernel adds
them. OpenBLAS picks its kernels for the CPU when it loads (its "core type"; the environment
variable OPENBLAS_CORETYPE overrides the pick, and some machines set it), so a result computed
through it is bit-exact for one core type and within a rounding bound across core types
(docs/exactness.md). Manifests and reports record what this module returns.
"""
import ctypes
import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo_field(name):
    """The first value of ``name`` in /proc/cpuinfo, or None where there is none."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def cpu_model():
    """The CPU's model name ("Intel(R) Xeon(R) ..."), or what Python knows, or "unknown"."""
    return _cpuinfo_field("model name") or platform.processor() or "unknown"


def cpu_flags():
    """The CPU's feature flags (avx2, avx512f, ...) as /proc/cpuinfo lists them."""
    return set((_cpuinfo_field("flags") or "").split())


def _loaded_blas_paths():
    """Paths of the shared libraries this process has loaded whose names say BLAS."""
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    paths = {line.split()[-1] for line in maps if line.split()[-1].startswith("/")}
    # numpy's and scipy's extension modules wrap the BLAS; they are not one
    blas = [p for p in paths if "blas" in Path(p).name and ".cpython-" not in p]
    return sorted(blas, key=lambda p: ("openblas" not in Path(p).name, p))  # the library itself first


# OpenBLAS's query functions, by the names its builds export them under: plain, and the symbol
# prefix and suffix of the copy PyPI's numpy and scipy wheels bundle
OPENBLAS_NAMES = (("openblas_", ""), ("scipy_openblas_", "64_"))


def _openblas(path):
    """``(get_corename, get_config)`` of the OpenBLAS at ``path`` (already loaded: no second
    copy), or None where the library is not OpenBLAS."""
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    for prefix, suffix in OPENBLAS_NAMES:
        try:
            functions = [getattr(lib, f"{prefix}get_{what}{suffix}") for what in ("corename", "config")]
        except AttributeError:
            continue
        for fn in functions:
            fn.restype = ctypes.c_char_p
        return functions
    return None


def blas_info():
    """The BLAS this process computes with: ``{"library", "version", "core", "config", "path"}``
    for OpenBLAS (its core type is the kernel set it runs), ``{"library": "unknown", "path"}``
    for another, ``{"library": "none"}`` before any is loaded."""
    paths = _loaded_blas_paths()
    for path in paths:
        functions = _openblas(path)
        if functions is not None:
            corename, config = (fn().decode() for fn in functions)
            words = config.split()
            version = words[1] if len(words) > 1 and words[0] == "OpenBLAS" else "unknown"
            return {"library": "OpenBLAS", "version": version,
                    "core": corename, "config": config, "path": path}
    return {"library": "unknown", "path": paths[0]} if paths else {"library": "none"}


def machine():
    """What a manifest records of where it was computed: the CPU model and the BLAS."""
    return {"cpu": cpu_model(), "blas": blas_info()}


def machine_line():
    """The machine in words, for reports: "<CPU>, OpenBLAS 0.3.21 with its Haswell kernels"."""
    blas = blas_info()
    if blas["library"] == "OpenBLAS":
        return f"{cpu_model()}, OpenBLAS {blas['version']} with its {blas['core']} kernels"
    return f"{cpu_model()}, BLAS {blas.get('path', 'not loaded')}"
