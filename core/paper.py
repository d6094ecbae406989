"""The paper's published numbers and schedule, read from ``core/paper_fig5.json``.

That file is a verbatim copy of the team's transcription of the paper (``shared/paper/fig5.json``:
Fig. 5 means, per-image values where the extraction was legible, the Figs. 3-4 sampling); nothing
here restates a number. A test checks the copy against the shared original when it is present.
"""
import json
import sys
from functools import lru_cache
from pathlib import Path

FIG5 = Path(__file__).with_name("paper_fig5.json")


@lru_cache(maxsize=1)
def fig5():
    """The whole transcription: {"scale", "datasets": {name: {...}}, "schedule": {...}}."""
    return json.loads(FIG5.read_text())


def schedule():
    """{"max_iter", "curve_first_test", "curve_test_interval"}: the paper's training schedule."""
    return dict(fig5()["schedule"])


def curve_points(max_iter=None):
    """Iterations at which the paper sampled its test-PSNR curves (Figs. 3-4), up to ``max_iter``
    (default: the paper's own length)."""
    s = schedule()
    last = s["max_iter"] if max_iter is None else max_iter
    return list(range(s["curve_first_test"], last + 1, s["curve_test_interval"]))


def dataset(name):
    """The paper's Fig. 5 entry for one of our data sets, or None (a user's own data set)."""
    return fig5()["datasets"].get(name)


# Snapshots of a paper-length run: often enough that a stopped run loses little (--resume).
PAPER_SNAPSHOT = 100000
# The dense curve option (PROFILE=paper-dense): a test point every 1e5 iterations.
DENSE_TEST_INTERVAL = 100000


def profile_overrides(dense=False):
    """KEY=VALUE config overrides of the paper's schedule (PROFILE=paper / paper-dense)."""
    s = schedule()
    tests = [f"test_first={DENSE_TEST_INTERVAL}", f"test_interval={DENSE_TEST_INTERVAL}"] if dense \
        else [f"test_first={s['curve_first_test']}", f"test_interval={s['curve_test_interval']}"]
    return [f"max_iter={s['max_iter']}", *tests, f"snapshot={PAPER_SNAPSHOT}"]


if __name__ == "__main__":  # python -m core.paper profile [dense]: for the Makefile
    if sys.argv[1:2] != ["profile"] or sys.argv[2:] not in ([], ["dense"]):
        sys.exit("usage: python -m core.paper profile [dense]")
    print(" ".join(profile_overrides(dense=sys.argv[2:] == ["dense"])))
