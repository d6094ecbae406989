"""core.machine names the CPU and the BLAS kernels a number was computed with; manifests record a
new entry only when they change; tools.blas_kernels (make test-kernels) runs tests under another
OpenBLAS core type in a child process, checks that OpenBLAS took it, and skips one the CPU cannot
run."""
import numpy  # noqa: F401  (loads OpenBLAS, as Caffe does)
import pytest

from core.machine import blas_info, cpu_flags, cpu_model, machine, machine_line
from core.run_files import record_machine
from tools import blas_kernels


def test_the_blas_is_openblas_with_a_core_type():
    info = blas_info()
    assert info["library"] == "OpenBLAS" and info["core"] and info["version"][0].isdigit()
    assert info["core"] in info["config"] and info["core"] in machine_line()
    assert machine() == {"cpu": cpu_model(), "blas": info} and cpu_model() != "unknown"


def test_a_manifest_records_a_machine_once_and_each_change():
    manifest = {}
    record_machine(manifest, 0)
    record_machine(manifest, 500)  # resumed on the same machine
    assert manifest["machines"] == [{"from_iter": 0, **machine()}]
    manifest["machines"][0]["blas"] = dict(manifest["machines"][0]["blas"], core="SomeOtherCore")
    record_machine(manifest, 800)  # as if the first part ran under another core type
    assert [m["from_iter"] for m in manifest["machines"]] == [0, 800]


def test_every_core_type_has_an_older_one_known_to_the_tool():
    for core, older in blas_kernels.OLDER.items():
        assert older in blas_kernels.CORE_TYPE_NEEDS and older != core


def test_a_core_type_the_cpu_lacks_is_skipped_with_the_reason(monkeypatch):
    monkeypatch.setattr(blas_kernels, "cpu_flags", lambda: {"sse4_2", "avx"})
    assert blas_kernels.run_core("Haswell", []) == "skipped: this CPU lacks avx2 fma"


@pytest.mark.slow
def test_make_test_kernels_runs_tests_under_the_core_type_asked_for(capsys):
    if "avx" not in cpu_flags():
        pytest.skip("this CPU lacks AVX, which OpenBLAS's Sandybridge kernels need")
    test = "tests/test_rounding.py::test_gamma_is_highams_and_refuses_sums_too_long_to_bound"
    assert blas_kernels.main(["--cores", "Sandybridge", "--", test]) == 0
    out = capsys.readouterr().out
    assert "OPENBLAS_CORETYPE=Sandybridge (in the child processes only)" in out
    assert "test-kernels: Sandybridge: passed" in out
    assert blas_kernels.core_taken("Sandybridge") == "Sandybridge"
