"""`thickslice --study --series` (tools/thickslice.py, inference.upscale_pacs): the shipped
series stored on a real Orthanc of this module's own, refined through-plane with a short training
run and stored back into the study as a derived series that says so; a rerun stores nothing.
Marked ``pacs`` and ``slow`` (docs/pacs.md)."""
import subprocess
import sys

import pydicom
import pytest

from data_prep.dicomweb import connect
from data_prep.sources import PROSTATE_DIR
from core.config import ROOT
from tests.helpers import clean_env, make, orthanc_server

pytestmark = [pytest.mark.pacs, pytest.mark.slow]

FIRST = pydicom.dcmread(next(PROSTATE_DIR.iterdir()), stop_before_pixels=True)
STUDY = FIRST.StudyInstanceUID


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from orthanc_server(tmp_path_factory.mktemp("pacs"))


def thickslice(server, work):
    """As make thickslice STUDY= runs it, with the work folder under the test's own."""
    return subprocess.run(
        [sys.executable, "-m", "tools.thickslice", "--pacs", server["url"], "--study", STUDY,
         "--series", "t2_tse", "--iters", "20", "--work", str(work / "work")],
        cwd=ROOT, env=clean_env(MEDSR_PACS_CREDENTIALS=server["credentials"]),
        capture_output=True, text=True, timeout=900)


def test_thickslice_stores_the_refined_series_once(server, tmp_path):
    env = {"MEDSR_PACS_URL": server["url"], "MEDSR_PACS_CREDENTIALS": server["credentials"]}
    pacs = connect(server["url"], env=env)
    pacs.store_series(PROSTATE_DIR)
    done = thickslice(server, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    series = pacs.series(STUDY)
    derived = [s for s in series if s.description.endswith("SR z x6")]
    assert len(series) == 2 and len(derived) == 1, [s.description for s in series]
    assert derived[0].instances == 19 * 6  # 3 mm slices of 0.5 mm pixels: factor 6
    assert derived[0].number not in {s.number for s in series if s is not derived[0]}
    ds = pydicom.Dataset.from_json(pacs.metadata(derived[0])[0])
    assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert ds.DerivationDescription.startswith("through-plane x6 ")
    again = thickslice(server, tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "nothing stored" in again.stdout
    assert len(pacs.series(STUDY)) == 2


def test_make_thickslice_passes_the_study_and_needs_series():
    """make thickslice STUDY= runs the same command (PACS= or $MEDSR_PACS_URL); without SERIES=
    it says what is missing."""
    done = make("-n", "thickslice", "STUDY=1.2.3", "SERIES=t2 tse", "PACS=http://127.0.0.1:9")
    assert done.returncode == 0, done.stderr
    assert "--study='1.2.3' --series='t2 tse' --pacs='http://127.0.0.1:9'" in done.stdout
    missing = make("-n", "thickslice", "STUDY=1.2.3")
    assert missing.returncode != 0 and "STUDY= needs SERIES=REGEX" in missing.stderr
