"""The README and docs/ stay in step with the tree: every relative link resolves (to a file, and
to a heading where it names one), the README's table of Make targets is what `make help` prints,
every page of docs/ is reachable from the README, and every notebook entry from its index."""
import re
import subprocess

import pytest

from core.config import ROOT

README = ROOT / "README.md"
PAGES = sorted([README, ROOT / "tools" / "setup" / "README.md", *(ROOT / "docs").rglob("*.md")])
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
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
