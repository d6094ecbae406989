"""The README and docs/ stay in step with the tree: every relative link and image resolves (to a
file, and to a heading where it names one), the README's table of Make targets is what `make help`
prints, every page of docs/ is reachable from the README, every notebook entry from its index, and
the results tables of the README and docs/results.md are the committed manifests' numbers. (The
commands the pages show: tests/test_docs_commands.py.)"""
import json
import re
import subprocess

import pytest

from core import paper
from core.config import ROOT, dataset_config

README = ROOT / "README.md"
PAGES = sorted([README, ROOT / "tools" / "setup" / "README.md", *(ROOT / "docs").rglob("*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def links(page):
    """The link targets of a Markdown page, code blocks left out."""
    return LINK.findall(FENCE.sub("", page.read_text()))


def anchor(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page):
    return {anchor(h) for h in re.findall(r"^#+ (.*)$", FENCE.sub("", page.read_text()), re.M)}


def relative(target):
    return not re.match(r"[a-z]+:", target) and not target.startswith("#")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in links(page):
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if relative(target) and not dest.exists():
            broken.append(target)
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


def test_the_anchor_rule_reads_headings_as_github_does():
    assert anchor("Reference weights (`make reference`)") == "reference-weights-make-reference"
    assert anchor("Differences from the paper") == "differences-from-the-paper"


def make_help():
    """(target, description) for each line `make help` prints."""
    out = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "help"],
                         capture_output=True, text=True, check=True).stdout
    return [tuple(line.split(None, 1)) for line in out.splitlines() if line.strip()]


def readme_targets():
    """(target, description) for each row of the README's table of Make targets."""
    section = README.read_text().split("## Make targets", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z-]+)` \| (.*) \|$", section, re.M)
    return [(name, text.replace("\\|", "|")) for name, text in rows]


def test_the_readme_lists_the_make_targets_as_make_help_prints_them():
    expected = "\n".join(f"| `{n}` | {d.replace('|', chr(92) + '|')} |" for n, d in make_help())
    assert readme_targets() == make_help(), "README's '## Make targets' rows should be:\n" + expected


def test_every_make_target_has_a_help_line():
    """A target without `## ` is missing from `make help`, so from the README's table."""
    text = (ROOT / "Makefile").read_text()
    targets = {t for line in re.findall(r"^\.PHONY:(.*)$", text, re.M) for t in line.split()}
    helped = {name for name, _ in make_help()}
    internal = {"check-venv"}  # a prerequisite of other targets, not a verb
    assert targets - internal <= helped, sorted(targets - internal - helped)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(README) if relative(t)}
    pages = set((ROOT / "docs").glob("*.md"))
    assert not pages - linked, sorted(str(p.relative_to(ROOT)) for p in pages - linked)


def test_every_notebook_entry_is_in_its_index_and_named_by_date():
    folder = ROOT / "docs" / "notebook"
    entries = {p for p in folder.glob("*.md") if p.name != "README.md"}
    indexed = {(folder / t).resolve() for t in links(folder / "README.md") if relative(t)}
    assert not entries - indexed, sorted(p.name for p in entries - indexed)
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}-[a-z0-9-]+\.md", p.name) for p in entries)


def test_the_readme_shows_the_commands_ci_runs():
    """.ci/run runs the README's two commands, then make test-kernels."""
    text = README.read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make setup   #" in text and "make test    #" in text
    for command in ("make setup", "make test", "make test-kernels"):
        assert command in text and command in ci


# --- the numbers: the README's and docs/results.md's tables against the committed manifests ------

def score(psnr, ssim, sign=""):
    """A PSNR / SSIM pair as the tables print it (2 and 4 decimals, as REPORT.md does)."""
    return f"{psnr:{sign}.2f} / {ssim:{sign}.4f}"


def gain(method, bicubic):
    """A gain as the tables print it: the unrounded difference, rounded."""
    return score(method["psnr"] - bicubic["psnr"], method["ssim"] - bicubic["ssim"], "+")


def pack(*parts):
    """The manifest of a committed long schedule (models/reference/<d>/, models/long/<d>/<v>/)."""
    path = ROOT.joinpath("models", *parts, "manifest.json")
    return json.loads(path.read_text()) if path.is_file() else None


def result_at(manifest, iteration):
    return next(t for t in manifest["tests"] if t["iter"] == iteration)


def paper_gain(dataset):
    fig5 = paper.dataset(dataset)
    return gain(fig5["rrelu_nesterov"]["mean"], fig5["bicubic"]["mean"])


def table_rows(text, heading, first_column):
    """{first cell: [other cells]} of the table rows under ``heading`` whose first cell matches."""
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = re.findall(rf"^\| ({first_column}) \| (.*) \|$", section, re.M)
    return {name: [c.strip() for c in cells.split("|")] for name, cells in rows}


DATASETS_SHOWN = ("brain", "prostate", "breast")


def readme_results_expected():
    """The README's results table from the manifests: bicubic, `make reproduce` (the reference
    run's test at the default length: the same run up to there), its gain, the reference weights'
    last test, its gain, and the paper's gain (core/paper_fig5.json)."""
    rows = {}
    for d in DATASETS_SHOWN:
        ref = pack("reference", d)
        bicubic, short = ref["bicubic"], result_at(ref, dataset_config(d).max_iter)
        final = ref["tests"][-1]
        rows[d] = [score(bicubic["psnr"], bicubic["ssim"]), score(short["psnr"], short["ssim"]),
                   gain(short, bicubic), score(final["psnr"], final["ssim"]), gain(final, bicubic),
                   paper_gain(d)]
    return rows


def readme_results(text):
    return table_rows(text, "## Results", "|".join(DATASETS_SHOWN))


def test_the_readme_results_are_the_manifests():
    assert readme_results(README.read_text()) == readme_results_expected()


def test_a_wrong_number_in_the_readme_results_is_caught():
    text = README.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| brain |"))
    for planted in (row.replace("+3.50", "+3.49"), row.replace("25.76", "25.75")):
        assert planted != row
        assert readme_results(text.replace(row, planted)) != readme_results_expected()


def test_the_results_page_agrees_with_the_readme_and_the_manifests():
    """docs/results.md: `make reproduce`'s table (the README's columns again; ReLU + SGD where a
    long schedule of it is packed), the reference weights along 10^5 iterations, and the paper's
    variants at 10^5 on prostate."""
    text = (ROOT / "docs" / "results.md").read_text()
    readme = readme_results_expected()
    reproduce = table_rows(text, "## `make reproduce`", "|".join(DATASETS_SHOWN))
    for d in DATASETS_SHOWN:
        cells = reproduce[d]
        assert [cells[0], cells[1], cells[2], cells[4]] == [*readme[d][:3], readme[d][5]], d
        baseline = pack("long", d, "relu_sgd")
        if baseline:
            short = result_at(baseline, dataset_config(d).max_iter)
            assert cells[3] == score(short["psnr"], short["ssim"]), d
    along = table_rows(text, "## The reference weights", "|".join(DATASETS_SHOWN))
    for d in DATASETS_SHOWN:
        ref = pack("reference", d)
        iters = (6000, 10000, 20000, 40000, 60000, 80000, 100000)
        expected = [score(ref["bicubic"]["psnr"], ref["bicubic"]["ssim"]),
                    *(score(result_at(ref, i)["psnr"], result_at(ref, i)["ssim"]) for i in iters),
                    gain(ref["tests"][-1], ref["bicubic"]), paper_gain(d)]
        assert along[d] == expected, d
    variants = table_rows(text, "## The paper's claims", r"[^|]*")
    names = {"rrelu_sgd": "RReLU + SGD", "relu_nesterov": "ReLU + NAG",
             "relu_sgd": "ReLU + SGD (the release's)", "rrelu_adam": "RReLU + Adam (base_lr 1e-3)",
             "relu_adam": "ReLU + Adam (base_lr 1e-3)"}
    for variant, name in names.items():
        m = pack("long", "prostate", variant)
        final = m["tests"][-1]
        assert variants[name] == [score(final["psnr"], final["ssim"]), gain(final, m["bicubic"])], name


@pytest.mark.slow
def test_the_readme_picture_is_what_its_script_draws(tmp_path):
    """tools/readme_figure.py redraws docs/readme_figure.png from the committed reference weights
    and the shipped slice, with no data set built (same size; the pixels depend on fonts)."""
    from PIL import Image

    from tools.readme_figure import main
    out = tmp_path / "figure.png"
    assert main(["--out", str(out)]) == 0
    assert Image.open(out).size == Image.open(ROOT / "docs" / "readme_figure.png").size
    assert "docs/readme_figure.png" in README.read_text()
