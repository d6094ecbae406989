"""Pull, upscale, push back (issue 34, deliverables 4 and 5; inference.upscale_pacs, docs/pacs.md),
against a real Orthanc of this module's own (tests/helpers.py: orthanc_server, as tests/test_pacs.py),
marked ``pacs`` and ``slow``: the shipped series stored, then `make upscale PACS= STUDY= SERIES=t2
RUN=` stores its derived series into the study, whose pixels are those of the local upscale with
the same net and which dciodvfy finds nothing new in; a rerun stores nothing; a failure midway
(while upscaling, or while storing) leaves no new series; each failure of the whole run is one line
without the password.

The nets are tiny (two channels where SRCNN has 64 and 32): the same layers and code path, a
fraction of the time.
"""
import re

import caffe
import numpy as np
import pydicom
import pytest

from core.config import ROOT
from core.errors import DataError
from data_prep.dicomweb import Pacs, PacsError, connect, read_credentials
from data_prep.sources import PROSTATE_DIR
from inference import upscale, upscale_pacs
from inference.upscale_tree import net_id
from tests.helpers import clean_env, free_port, identity_params, make, make_run, orthanc_server
from tests.test_derived_dicom import DCIODVFY, new_messages

pytestmark = [pytest.mark.pacs, pytest.mark.slow]

SHIPPED = PROSTATE_DIR
FIRST = pydicom.dcmread(next(SHIPPED.iterdir()), stop_before_pixels=True)
STUDY, SOURCE = FIRST.StudyInstanceUID, FIRST.SeriesInstanceUID


def tiny_model(folder, params=None):
    """(deploy, caffemodel) of the SRCNN ReLU net with 2 + 2 channels: the identity net's first
    channels (tests.helpers.identity_params), or ``params``."""
    text = (ROOT / "models" / "srcnn_relu_deploy.prototxt").read_text()
    text = re.sub(r"num_output:\s*(64|32)\b", "num_output: 2", text)
    folder.mkdir(parents=True, exist_ok=True)
    deploy = folder / "tiny_deploy.prototxt"
    deploy.write_text(text)
    net = caffe.Net(str(deploy), caffe.TEST)
    ident = identity_params()
    for name, blobs in net.params.items():
        for blob, array in zip(blobs, (params or ident)[name]):
            blob.data[...] = array[tuple(slice(0, n) for n in blob.data.shape)]
    model = folder / "tiny.caffemodel"
    net.save(str(model))
    return deploy, model


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from orthanc_server(tmp_path_factory.mktemp("pacs"))


@pytest.fixture(scope="module")
def env(server):
    return {"MEDSR_PACS_URL": server["url"], "MEDSR_PACS_CREDENTIALS": server["credentials"]}


@pytest.fixture(scope="module")
def pacs(server, env):
    return connect(server["url"], env=env)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("net")
    return make_run(folder, tiny_model(folder / "model"))


@pytest.fixture(scope="module")
def first_run(pacs, env, run_dir):
    """The shipped series stored, then `make upscale PACS= STUDY= SERIES=t2 RUN=`, as a user does."""
    assert pacs.store_series(SHIPPED) == {SOURCE: 19}
    done = make("upscale", f"PACS={env['MEDSR_PACS_URL']}", f"STUDY={STUDY}", "SERIES=t2",
                f"RUN={run_dir}", env=clean_env(MEDSR_PACS_CREDENTIALS=env["MEDSR_PACS_CREDENTIALS"]),
                timeout=600)
    return done


def listed(pacs):
    return [(s.number, s.description, s.instances) for s in pacs.series(STUDY)]


def derived_series(pacs):
    return [s for s in pacs.series(STUDY) if s.uid != SOURCE]


def test_make_upscale_stores_the_derived_series_into_the_study(first_run, pacs):
    assert first_run.returncode == 0, first_run.stderr
    lines = first_run.stdout.splitlines()
    assert lines[0] == f"upscale: study {STUDY}: 1 series: 1 stored, 0 already there, 0 failed"
    assert lines[1] == "  stored    series 4 't2_tse_tra' -> series 4003 't2_tse_tra SR x3', 19 instance(s)"
    assert listed(pacs) == [(4, "t2_tse_tra", 19), (4003, "t2_tse_tra SR x3", 19)]


def test_the_stored_pixels_are_the_local_upscale_and_dciodvfy_finds_nothing_new(
        first_run, pacs, run_dir, tmp_path):
    assert first_run.returncode == 0, first_run.stderr
    [derived] = derived_series(pacs)
    pulled = pacs.fetch_series(derived, tmp_path / "pulled")
    assert upscale.main(["--in", str(SHIPPED), "--out", str(tmp_path / "local"), "--run", str(run_dir)]) == 0
    local = {pydicom.dcmread(p).SourceImageSequence[0].ReferencedSOPInstanceUID: pydicom.dcmread(p)
             for p in (tmp_path / "local").iterdir()}
    sources = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in SHIPPED.iterdir()}
    assert len(pulled) == len(local) == 19
    name = net_id(run_dir / "deploy.prototxt", run_dir / "snapshots" / "srcnn_iter_20.caffemodel")
    for path in pulled:
        ds = pydicom.dcmread(path)
        source = ds.SourceImageSequence[0].ReferencedSOPInstanceUID
        assert np.array_equal(ds.pixel_array, local[source].pixel_array), path.name
        assert ds.SeriesNumber == local[source].SeriesNumber == 4003
        assert ds.DerivationDescription.endswith(f"; net sha256 {name}")  # the net's identity
        assert ds.DerivationDescription == local[source].DerivationDescription
    if DCIODVFY is None:
        return  # no validator here (Debian package dicom3tools; test_derived_dicom.py says so)
    for path in pulled[:: len(pulled) // 3]:
        source = pydicom.dcmread(path).SourceImageSequence[0].ReferencedSOPInstanceUID
        assert new_messages(sources[source], path) == set()


def test_a_rerun_stores_nothing_new(first_run, pacs, env, run_dir, monkeypatch, capsys):
    assert first_run.returncode == 0, first_run.stderr
    before = listed(pacs)
    monkeypatch.setenv("MEDSR_PACS_URL", env["MEDSR_PACS_URL"])
    monkeypatch.setenv("MEDSR_PACS_CREDENTIALS", env["MEDSR_PACS_CREDENTIALS"])
    bars = []

    def bar(items, **kwargs):  # tqdm's signature: the loop's bar is over the series
        bars.append((kwargs.get("desc"), kwargs.get("unit"), len(items)))
        return items
    monkeypatch.setattr(upscale_pacs, "tqdm", bar)
    assert upscale.main(["--study", STUDY, "--series", "t2", "--run", str(run_dir)]) == 0
    assert bars == [("series", "series", 1)]
    out = capsys.readouterr().out.splitlines()
    # the derived series matches "t2" too, and is not taken for a source
    assert out == [f"upscale: study {STUDY}: 1 series: 0 stored, 1 already there, 0 failed",
                   "  there     series 4 't2_tse_tra': already in the study as series 4003, "
                   "nothing stored"]
    assert listed(pacs) == before


def test_out_keeps_the_derived_series_and_another_net_is_another_series(
        first_run, pacs, env, tmp_path, monkeypatch, capsys):
    assert first_run.returncode == 0, first_run.stderr
    other = make_run(tmp_path, tiny_model(tmp_path / "other", other_params()))
    monkeypatch.setenv("MEDSR_PACS_CREDENTIALS", env["MEDSR_PACS_CREDENTIALS"])
    try:
        assert upscale.main(["--study", STUDY, "--series", "^t2_tse_tra$", "--pacs", env["MEDSR_PACS_URL"],
                             "--run", str(other), "--out", str(tmp_path / "kept")]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[1] == "  stored    series 4 't2_tse_tra' -> series 4004 't2_tse_tra SR x3', 19 instance(s)"
        assert out[0].endswith(f"1 stored, 0 already there, 0 failed; kept in {tmp_path / 'kept'}")
        [kept] = (tmp_path / "kept").iterdir()  # the pulled series' temporary folder is gone
        assert kept.name == f"4_t2_tse_tra_{SOURCE}" and len(list(kept.iterdir())) == 19
        assert [s[0] for s in listed(pacs)] == [4, 4003, 4004]  # a number the study did not use
    finally:
        for s in derived_series(pacs):
            if s.number == 4004:
                pacs.delete_series(s.uid)


def other_params():
    rng = np.random.RandomState(5)
    return {name: [rng.normal(0, 0.1, a.shape) for a in arrays]
            for name, arrays in identity_params().items()}


@pytest.mark.parametrize("where", ["upscaling", "storing"])
def test_a_failure_midway_leaves_no_new_series(first_run, pacs, env, tmp_path, monkeypatch,
                                               capsys, where):
    """Another net (so the derived copy in the study is not this method's): the upscale of the
    series breaks after a few slices, or its store after half the files."""
    assert first_run.returncode == 0, first_run.stderr
    other = make_run(tmp_path, tiny_model(tmp_path / "other", other_params()))
    before = listed(pacs)
    if where == "upscaling":
        import inference.upscale_formats as formats
        stack, calls = formats.upscale_stack, []

        def breaks(*args, **kwargs):
            calls.append(1)
            if len(calls) > 3:
                raise DataError("the engine broke (test)")
            return stack(*args, **kwargs)
        monkeypatch.setattr(formats, "upscale_stack", breaks)
    else:
        store = Pacs.store

        def half_then_fail(self, files, study=None):
            store(self, files[: len(files) // 2])
            raise PacsError("the PACS went away (test)")
        monkeypatch.setattr(Pacs, "store", half_then_fail)
    monkeypatch.setenv("MEDSR_PACS_URL", env["MEDSR_PACS_URL"])
    monkeypatch.setenv("MEDSR_PACS_CREDENTIALS", env["MEDSR_PACS_CREDENTIALS"])
    assert upscale.main(["--study", STUDY, "--series", "t2_tse", "--run", str(other)]) == 2
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0] == f"upscale: study {STUDY}: 1 series: 0 stored, 0 already there, 1 failed"
    reason = "the engine broke (test)" if where == "upscaling" else "the PACS went away (test)"
    assert lines[1] == f"  FAILED    series 4 't2_tse_tra': {reason} (nothing of it stored)"
    assert captured.err.endswith("upscale: error: 1 of 1 series failed (named above); nothing of "
                                 "them was stored\n")
    assert listed(pacs) == before


def test_each_failure_of_the_run_is_one_line_without_the_password(first_run, server, run_dir,
                                                                   tmp_path):
    assert first_run.returncode == 0, first_run.stderr
    password = read_credentials(server["credentials"])[1]
    wrong = tmp_path / "wrong"
    wrong.write_text("medsr:not-the-password\n")
    wrong.chmod(0o600)
    url, dead = server["url"], f"http://127.0.0.1:{free_port()}"
    cases = [
        (url, str(wrong), STUDY, "t2", f"{url}: the PACS refused the user and password (HTTP 401)"),
        (url, "", STUDY, "t2", f"{url}: the PACS asks for a user and password (HTTP 401)"),
        (url, server["credentials"], "1.2.3.4", "t2", f"{url}: no study 1.2.3.4 on the PACS"),
        (dead, server["credentials"], STUDY, "t2", f"{dead}: cannot reach the PACS (Connection refused)"),
        (url, server["credentials"], STUDY, "flair",
         f"{url}: no series of study {STUDY} has a SeriesDescription matching --series 'flair' "
         "(its series: 't2_tse_tra'; a series this project derived is not used again)"),
    ]
    for pacs_url, credentials, study, series, expected in cases:
        done = make("upscale", f"PACS={pacs_url}", f"STUDY={study}", f"SERIES={series}",
                    f"RUN={run_dir}", env=clean_env(MEDSR_PACS_CREDENTIALS=credentials,
                                                    MEDSR_PACS_URL=""))
        assert done.returncode == 2, (expected, done.stderr)
        assert done.stderr.startswith(f"upscale: error: {expected}"), done.stderr
        ours = [line for line in done.stderr.splitlines() if not line.startswith("make: ***")]
        assert len(ours) == 1 and done.stdout == "", done.stderr  # and make's own line
        assert password not in done.stderr + done.stdout


def test_make_upscale_takes_the_pacs_from_the_environment(first_run, env, run_dir):
    done = make("upscale", f"STUDY={STUDY}", "SERIES=t2", f"RUN={run_dir}", env=clean_env(**env))
    assert done.returncode == 0, done.stderr
    assert "1 already there" in done.stdout.splitlines()[0]


def test_the_command_line_says_what_goes_with_study(capsys):
    for argv, message in ((["--study", STUDY, "--reference", "prostate"], "--study needs --series"),
                          (["--study", STUDY, "--series", "t2", "--in", "x", "--reference", "prostate"],
                           "no --in"),
                          (["--pacs", "http://h:1", "--in", "x", "--out", "y", "--reference", "prostate"],
                           "--pacs goes with --study"),
                          (["--reference", "prostate"], "required: --in, --out")):
        with pytest.raises(SystemExit) as exc:
            upscale.parse_args(argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_make_upscale_with_study_needs_series():
    done = make("upscale", "STUDY=1.2.3", "REFERENCE=prostate")
    assert done.returncode == 2 and "STUDY= needs SERIES=REGEX" in done.stderr
