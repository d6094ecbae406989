"""Shared test set-up: quiet Caffe's glog output (glog reads this when libcaffe loads, so before any
test module imports caffe), and the fixtures more than one test module uses. Plain helpers are in
tests/helpers.py. Tests marked ``slow`` (subprocesses, real training runs) are left out by
``make test-fast``."""
import os

os.environ.setdefault("GLOG_minloglevel", "2")

import caffe  # noqa: E402
import pytest  # noqa: E402

from core.config import DEFAULT, ROOT  # noqa: E402
from data_prep.build import build_dataset  # noqa: E402
from inference.net import SRNet  # noqa: E402
from tests.helpers import identity_params, random_slices  # noqa: E402

DEPLOY = ROOT / "models" / "srcnn_relu_deploy.prototxt"


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """A data root holding one tiny data set, ``toy`` (3 training and 2 test slices); read-only."""
    root = tmp_path_factory.mktemp("data")
    build_dataset(root / "toy", random_slices(3), random_slices(2, seed=7), DEFAULT, {"sources": []})
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """(deploy prototxt, caffemodel) of the identity net (tests.helpers.identity_params)."""
    net = caffe.Net(str(DEPLOY), caffe.TEST)
    for name, arrays in identity_params().items():
        for blob, array in zip(net.params[name], arrays):
            blob.data[...] = array
    path = tmp_path_factory.mktemp("model") / "identity.caffemodel"
    net.save(str(path))
    return DEPLOY, path


@pytest.fixture(scope="module")
def net(model):
    """``SRNet`` of the identity net."""
    return SRNet(*model)


# ------------------------------------------------- the checkout is left as it was found

# The folders the commands write by default. A test that forgets an output flag writes there, where
# nothing else would notice (and a user's results would be overwritten by a toy's). runs/ is left
# out: a user's own training may write there while the tests run.
DEFAULT_OUTPUTS = ("results", "figures", "REPORT.md", "data", "bench", "models")
OUTPUTS_BEFORE = pytest.StashKey[dict]()
OUTPUTS_CHANGED = pytest.StashKey[list]()


def checkout_outputs():
    """{path relative to the root: (size, mtime_ns)} of every file under DEFAULT_OUTPUTS."""
    found = {}
    for name in DEFAULT_OUTPUTS:
        top = ROOT / name
        for path in [top] if top.is_file() else top.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and not path.name.endswith(".lock"):
                stat = path.stat()
                found[str(path.relative_to(ROOT))] = (stat.st_size, stat.st_mtime_ns)
    return found


def changed_outputs(before, after):
    """The paths added, removed or rewritten between two checkout_outputs()."""
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


def pytest_sessionstart(session):
    session.config.stash[OUTPUTS_BEFORE] = checkout_outputs()


def pytest_sessionfinish(session, exitstatus):
    changed = changed_outputs(session.config.stash[OUTPUTS_BEFORE], checkout_outputs())
    session.config.stash[OUTPUTS_CHANGED] = changed
    if changed:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    changed = config.stash.get(OUTPUTS_CHANGED, [])
    if changed:
        shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
        terminalreporter.section("the checkout was written to", red=True)
        terminalreporter.line(f"a test wrote into the commands' default outputs (give it an output under "
                              f"tmp_path): {shown}", red=True)
