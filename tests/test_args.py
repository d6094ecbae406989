"""A bad argument to any entry point is one line ``<program>: error: ...`` and exit status 2, not
argparse's usage screen (docs/reliability.md, core/args.py). The entry points are found by what
they call, so a new one is covered, and one that builds argparse's own parser fails here."""
import re
import subprocess
import sys

import pytest

from core.config import ROOT

PACKAGES = ("core", "data_prep", "inference", "eval", "tools")


def module_of(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__main__" else parts)


def entry_points():
    """{module: whether it builds its parser with core.args.command_line}, for every module that
    parses a command line."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text()
            if "ArgumentParser(" in text or re.search(r"\bcommand_line\(", text):
                if path.name != "args.py":
                    found[module_of(path)] = "command_line(" in text and "ArgumentParser(" not in text
    return found


def test_the_entry_points_are_found():
    found = entry_points()
    assert {"inference.upscale", "tools.train", "tools.thickslice", "data_prep"} <= found.keys()


def test_every_entry_point_builds_the_one_line_parser():
    assert [m for m, one_line in entry_points().items() if not one_line] == []


@pytest.mark.slow
def test_an_unknown_option_is_one_line_and_exit_2(tmp_path):
    modules = sorted(entry_points())
    procs = {m: subprocess.Popen([sys.executable, "-m", m, "--no-such-option"], cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for m in modules}
    bad = {}
    for m, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        lines = err.strip().splitlines()
        if proc.returncode != 2 or len(lines) != 1 or ": error: " not in lines[0] or "usage:" in err:
            bad[m] = (proc.returncode, err[-300:])
    assert bad == {}
