"""The commands that README.md, tools/setup/README.md and docs/*.md show work as written, checked
against the code without running them: a `make` target exists, each VAR= it is given is a variable
its recipe reads (through the variables and sub-makes it uses) and none it requires is missing; a
`python -m MODULE` module exists, each flag is one of its parser's options, and each KEY=VALUE is a
config key; a repository path named in the text exists. The notebook (docs/notebook/) is left
out: its entries are dated and stay as they were written."""
import argparse
import dataclasses
import importlib
import importlib.util
import re
import shlex
import subprocess

import pytest

from core.config import ROOT, Config

PAGES = sorted([ROOT / "README.md", ROOT / "tools" / "setup" / "README.md",
                *(ROOT / "docs").glob("*.md")])
FENCE = re.compile(r"^```([a-z]*)\n(.*?)^```", re.S | re.M)
SHELL_FENCES = {"", "sh", "bash", "console"}
PYTHON = re.compile(r"^(?:\.venv/bin/)?python3? ")
# Options of GNU make the docs may use; any other dash word after `make` (`--metric`) is an
# argument that make would refuse or misread.
MAKE_OPTIONS = {"-j", "-k", "-n", "-s", "-C", "-f", "--no-print-directory"}
# A word that stands for something the reader fills in, not a value to check.
PLACEHOLDER = re.compile(r"<[^>]*>|\.\.\.|^[A-Z]+$|\|")
CONFIG_KEYS = {f.name for f in dataclasses.fields(Config)}
CONDITIONAL = re.compile(r"^(ifeq|ifneq|ifdef|ifndef|else|endif)\b")
# Inline excerpts in pages another branch is editing; each must still be there (the test below
# fails once it is fixed, so the entry cannot outlive its reason).
PENDING = set()


# --- commands out of the pages -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Command:
    page: str
    words: tuple
    text: str
    in_block: bool  # a code block: meant to be pasted whole

    def __str__(self):
        return f"{self.page}: `{self.text}`"


def split_commands(line):
    """The commands of one shell line: comment dropped, split at && ; and |."""
    try:
        lexer = shlex.shlex(line, posix=True, punctuation_chars="&;|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words = list(lexer)
    except ValueError:  # an unbalanced quote: a line of prose, not a command
        return []
    commands, current = [], []
    for word in words:
        if word in {"&&", ";", "|", "||", "&"}:
            commands.append(current)
            current = []
        else:
            current.append(word)
    return [c for c in commands + [current] if c]


def strip_brackets(words):
    """`[ITERS=N]`, `[--factor N]`: the optional parts of a usage line, as plain words."""
    return tuple(w.strip("[]") for w in words if w.strip("[]"))


def block_commands(page, text):
    for lang, body in FENCE.findall(text):
        if lang not in SHELL_FENCES:
            continue
        for line in body.replace("\\\n", " ").splitlines():
            for words in split_commands(line):
                if words[0] == "make" or PYTHON.match(" ".join(words) + " "):
                    yield Command(page, strip_brackets(words), " ".join(words), True)


def inline_commands(page, text):
    prose = FENCE.sub("", text)
    for span in re.findall(r"`([^`]+)`", prose):
        span = " ".join(span.split())
        if not re.match(r"(make|(\.venv/bin/)?python3?) ", span) or ": " in span:
            continue  # not a command, or a line a command prints (`make gpu-check: no GPU ...`)
        for words in split_commands(span):
            yield Command(page, strip_brackets(words), span, False)


def page_commands(pages=PAGES):
    for path in pages:
        text, page = path.read_text(), str(path.relative_to(ROOT))
        yield from block_commands(page, text)
        yield from inline_commands(page, text)


# --- what the Makefile reads ---------------------------------------------------------------------

@dataclasses.dataclass
class Rule:
    prereqs: list
    recipe: str = ""


def makefile_lines(text):
    return text.replace("\\\n", " ").splitlines()


def parse_makefile(text):
    """(rules by target, pattern rules by prefix, variable definitions, exported names)."""
    rules, patterns, variables, exported, current = {}, {}, {}, set(), None
    for line in makefile_lines(text):
        assign = re.match(r"^([A-Za-z_][\w-]*)\s*(?:\?=|:=|\+=|=)\s*(.*)$", line)
        rule = re.match(r"^([a-z%][\w%-]*):(?!=)\s*([^#]*?)\s*(?:##.*)?$", line)
        if line.startswith("\t") or (current and CONDITIONAL.match(line)):
            if current is not None:
                current.recipe += line + "\n"
            continue
        current = None
        if assign:
            variables[assign.group(1)] = variables.get(assign.group(1), "") + " " + assign.group(2)
        elif line.startswith("export "):
            exported.update(line.split()[1:])
        elif rule:
            current = Rule(rule.group(2).split())
            if "%" in rule.group(1):
                patterns[rule.group(1).split("%")[0]] = current
            else:
                rules[rule.group(1)] = current
    return rules, patterns, variables, exported


def references(text, variables):
    """The variables a piece of make text reads, through the variables it expands."""
    text = text.replace("$$", "")  # the shell's $, not make's
    found = set(re.findall(r"\$\((?:value )?([A-Za-z_][\w-]*)\)", text))
    for args in re.findall(r"\$\(call [\w-]+,([^)$]*)\)", text):  # $(call require,DATASET ACT)
        found.update(w for w in re.split(r"[\s,]+", args) if re.fullmatch(r"[A-Z][A-Z0-9_]*", w))
    for prefix in re.findall(r"\$\(([A-Za-z_]\w*_)\$\(", text):  # $(PROFILE_$(PROFILE))
        found.update(v for v in variables if v.startswith(prefix))
    for name in set(found):
        if name in variables:
            inner = variables.pop(name)  # each definition once: no cycles
            found |= references(inner, variables)
    return found


class Makefile:
    def __init__(self, text):
        self.rules, self.patterns, self.variables, self.exported = parse_makefile(text)

    def rule(self, target):
        if target in self.rules:
            return self.rules[target]
        return next((rule for prefix, rule in self.patterns.items()
                     if target.startswith(prefix) and target != prefix), None)

    def sub_targets(self, rule):
        """The targets its recipe's `$(MAKE)` lines and its prerequisites run."""
        found = [t for t in rule.prereqs if self.rule(t)]
        for line in rule.recipe.splitlines():
            if "$(MAKE)" in line:
                found += [w for w in re.split(r"[\s']+", line) if w in self.rules]
                found += [p + "%" for p in self.patterns if p in line]
        return found

    def reads(self, target, seen=None):
        """Every variable `make <target>` reads, sub-makes included (they inherit the command
        line's variables), and the exported ones."""
        seen = set() if seen is None else seen
        if target in seen:
            return set()
        seen.add(target)
        rule = self.rules.get(target) or self.patterns.get(target.rstrip("%")) or self.rule(target)
        names = references(rule.recipe, dict(self.variables)) | set(self.exported)
        for sub in self.sub_targets(rule):
            names |= self.reads(sub, seen)
        return names

    def required(self, target):
        """Groups of variables of which the recipe needs one each (`$(call require,A B)`: A and
        B; `$(if $(or $(RUN),$(REFERENCE)),,$(error ...))`: RUN or REFERENCE)."""
        recipe = self.rules[target].recipe if target in self.rules else ""
        groups = [[v] for words in re.findall(r"\$\(call require,([^)]*)\)", recipe)
                  for v in words.split()]
        one_of = r"\$\(if \$\((?:or )?((?:\$\([A-Z_]+\),?)+)\),,\$\(error"
        for alternatives in re.findall(one_of, recipe):
            groups.append(re.findall(r"\$\(([A-Z_]+)\)", alternatives))
        return groups


@pytest.fixture(scope="module")
def makefile():
    return Makefile((ROOT / "Makefile").read_text())


def make_errors(command, makefile):
    """What is wrong with one `make ...` command, as lines."""
    errors, targets, given, words = [], [], {}, list(command.words[1:])
    while words:
        word = words.pop(0)
        if word.startswith("-"):
            option = re.sub(r"^(-j)\d+$", r"\1", word)
            if option not in MAKE_OPTIONS:
                errors.append(f"make has no option {word}")
            elif option == "-C" and words:
                words.pop(0)
        elif re.match(r"^[A-Za-z_][\w]*=", word):
            name, _, value = word.partition("=")
            given[name] = value
        elif not PLACEHOLDER.search(word):
            targets.append(word)
    for target in targets:
        if makefile.rule(target) is None:
            errors.append(f"no make target {target!r}")
    known = [t for t in targets if makefile.rule(t)]
    read = set().union(*(makefile.reads(t) for t in known)) if known else set()
    for name in given:
        if known and name not in read:
            errors.append(f"make {' '.join(known)} does not read {name}")
    # In prose a bare `make upscale` names the target; with a VAR= it is a command to paste
    # (unless `...` marks it as an excerpt).
    if command.in_block or (given and "..." not in command.text):
        for target in known:
            for group in makefile.required(target):
                if not set(group) & set(given):
                    errors.append(f"make {target} needs {' or '.join(g + '=' for g in group)}")
    errors += config_key_errors(given.get("SET", "").split())
    return errors


def config_key_errors(assignments):
    """KEY=VALUE words that name no config key (`core/config.py`)."""
    keys = [w.partition("=")[0] for w in assignments if "=" in w and not w.startswith("-")]
    return [f"{k} is not a config key" for k in keys
            if k not in CONFIG_KEYS and not PLACEHOLDER.search(k) and k not in {"k", "KEY"}]


# --- what a `python -m` module accepts -----------------------------------------------------------

class Captured(BaseException):
    """Raised from inside parse_args: the parser, before the program does anything."""

    def __init__(self, parser):
        super().__init__()
        self.parser = parser


def parser_of(module_name, monkeypatch):
    """The argparse parser of `python -m module_name`, taken at its first parse: main() builds
    it and parses before any work (the entry points' rule), so nothing else runs."""
    spec = importlib.util.find_spec(module_name)
    if spec is not None and spec.submodule_search_locations is not None:
        module_name += ".__main__"  # a package runs as its __main__
    module = importlib.import_module(module_name)

    def capture(self, args=None, namespace=None):
        raise Captured(self)

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
        try:
            module.main([])
        except Captured as got:
            return got.parser
    raise AssertionError(f"python -m {module_name}: main() returned without parsing its arguments")


def names_usage_errors(words):
    """core.names parses by hand: `python -m core.names {datasets,...} | grid GRID [...]`."""
    from core.names import LISTS
    if words and (words[0] in LISTS or words[0] == "grid"):
        return []
    return [f"core.names takes one of {list(LISTS)} or grid"]


HAND_PARSED = {"core.names": names_usage_errors}


def python_errors(command, monkeypatch):
    """What is wrong with one `python ...` command. In prose a bare `python -m eval.regions`
    names the program; with arguments, or in a code block, it is a command to paste."""
    words = list(command.words)
    is_name = not command.in_block and words[1:2] == ["-m"] and len(words) == 3
    errors = []
    if words[0] != ".venv/bin/python" and not is_name:
        errors.append("run it as .venv/bin/python: only that python imports this pycaffe")
    if words[1:2] != ["-m"] or len(words) < 3:
        return errors  # python -c "...": code, not a command line
    module, args = words[2], words[3:]
    if importlib.util.find_spec(module) is None:
        return errors + [f"no module {module}"]
    if is_name:
        return errors
    if module in HAND_PARSED:
        return errors + HAND_PARSED[module](args)
    parser = parser_of(module, monkeypatch)
    options = {s: a for a in parser._actions for s in a.option_strings}
    if "--" in args:  # what follows -- is positional (KEY=VALUE overrides)
        args = args[:args.index("--")] + [w for w in args[args.index("--") + 1:] if "=" in w]
    for word, after in zip(args, args[1:] + [""]):
        flag = word.split("=")[0]
        if not word.startswith("-") or PLACEHOLDER.search(flag):
            continue
        if flag not in options:
            errors.append(f"python -m {module} has no option {flag}")
            continue
        value = word.partition("=")[2] if "=" in word else after
        choices = options[flag].choices
        if choices and value and not value.startswith("-") and not PLACEHOLDER.search(value) \
                and value not in choices:
            errors.append(f"{flag} {value}: not one of {list(choices)}")
    takes_overrides = any(a.metavar == "KEY=VALUE" for a in parser._actions)
    overrides = [w for w in args if re.match(r"^[a-z_]+=", w)]
    if overrides and not takes_overrides:
        errors.append(f"python -m {module} takes no KEY=VALUE")
    return errors + config_key_errors(overrides)


# --- repository paths ----------------------------------------------------------------------------

def tracked_top_level():
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True,
                         check=True).stdout
    return {line.split("/")[0] for line in out.splitlines() if "/" in line}


def path_errors(page, text, top):
    """Backquoted paths into the repository's own folders that do not exist (a `<name>` is any
    name; an output the project writes, which .gitignore names, need not), and `../` paths that
    leave the repository or lead nowhere."""
    errors, candidates = [], []
    for span in re.findall(r"`([^`\s]+)`", FENCE.sub("", text)):
        if span.startswith("../"):
            target = (page.parent / span).resolve()
            if not target.is_relative_to(ROOT):
                errors.append(f"{span} lies outside the repository")
            elif not target.exists():
                errors.append(f"{span} does not exist")
        elif "/" in span and span.split("/")[0] in top and not re.search(r"[*{}]", span):
            candidates.append((span, re.sub(r"<[^>]*>", "*", span.rstrip("/"))))
    ignored = set(subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "--no-index", "--stdin"], capture_output=True,
        text=True, input="\n".join(p.replace("*", "x") for _, p in candidates)).stdout.split())
    for span, pattern in candidates:
        if pattern.replace("*", "x") not in ignored and not list(ROOT.glob(pattern)):
            errors.append(f"{span} does not exist")
    return errors


# --- the tests -----------------------------------------------------------------------------------

COMMANDS = list(page_commands())


def test_the_pages_show_commands():
    """The extraction finds the commands (an empty list would pass every test below)."""
    blocks = [c for c in COMMANDS if c.in_block]
    assert len(blocks) > 30 and any(c.words[0] == ".venv/bin/python" for c in blocks)
    assert any(c.words[:2] == ("make", "upscale") for c in blocks)


@pytest.mark.parametrize("page", sorted({c.page for c in COMMANDS}))
def test_every_make_command_is_one_the_makefile_runs(page, makefile):
    wrong = [f"{c}: {e}" for c in COMMANDS if c.page == page and c.words[0] == "make"
             and (c.page, c.text) not in PENDING for e in make_errors(c, makefile)]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("page", sorted({c.page for c in COMMANDS}))
def test_every_python_command_is_one_its_parser_takes(page, monkeypatch):
    wrong = [f"{c}: {e}" for c in COMMANDS if c.page == page and PYTHON.match(c.words[0] + " ")
             for e in python_errors(c, monkeypatch)]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_repository_path_named_exists(page):
    errors = path_errors(page, page.read_text(), tracked_top_level())
    assert not errors, f"{page.relative_to(ROOT)}: " + "; ".join(errors)


def test_pending_excerpts_are_still_there():
    """Drop an entry of PENDING once its page is fixed."""
    for page, text in PENDING:
        assert f"`{text}`" in (ROOT / page).read_text(), f"{page} fixed `{text}`: drop it from PENDING"


# --- the checker catches what it should (planted mistakes) ---------------------------------------

def planted(text, in_block=True):
    return Command("planted.md", strip_brackets(shlex.split(text)), text, in_block)


@pytest.mark.parametrize("text, expected", [
    ("make curves --metric ssim", "no option --metric"),
    ("make regions DATASET=breast", "needs RUN="),
    ("make upscale IN=a OUT=b", "needs RUN= or REFERENCE="),
    ("make curves METRICS=ssim", "does not read METRICS"),
    ("make reproduce SEED=3", "does not read SEED"),
    ("make trian DATASET=prostate", "no make target 'trian'"),
    ("make train DATASET=prostate ACT=relu SOLVER=sgd SET=\"base_rate=1\"", "base_rate is not a config"),
])
def test_a_wrong_make_command_is_caught(text, expected, makefile):
    errors = make_errors(planted(text), makefile)
    assert any(expected in e for e in errors), errors


@pytest.mark.parametrize("text", [
    "make reproduce SEEDS=3 JOBS=2 RUN_THREADS=1",  # read by the sub-makes it runs
    "make grid SCHEDULER=slurm SBATCH_ARGS=--time=1:00:00 DRY_RUN=1",  # exported; the slurm branch
    "make train DATASET=prostate ACT=rrelu SOLVER=nesterov ITERS=300 SEED=1 PROFILE=paper GPU_ID=0",
    "make upscale IN=a OUT=b REFERENCE=brain FORCE=1 MEM=512",
])
def test_a_right_make_command_passes(text, makefile):
    assert make_errors(planted(text), makefile) == []


@pytest.mark.parametrize("text, expected", [
    (".venv/bin/python -m tools.curves --metrics ssim", "no option --metrics"),
    (".venv/bin/python -m eval --dataset prostate --engine onxx", "--engine onxx: not one of"),
    ("python -m inference.upscale --in a --out b --reference brain", "run it as .venv/bin/python"),
    (".venv/bin/python -m tools.train --dataset prostate --act relu --solver sgd base_rate=1",
     "base_rate is not"),
    (".venv/bin/python -m inference.upscale --in a --out b --reference brain --engine=onxx", "not one of"),
    (".venv/bin/python -m eval.nothing --in a", "no module eval.nothing"),
    (".venv/bin/python -m eval --dataset prostate base_lr=1", "takes no KEY=VALUE"),
])
def test_a_wrong_python_command_is_caught(text, expected, monkeypatch):
    errors = python_errors(planted(text), monkeypatch)
    assert any(expected in e for e in errors), errors


def test_a_right_python_command_passes(monkeypatch):
    commands = [planted(".venv/bin/python -m tools.train --dataset prostate --act rrelu "
                        "--solver nesterov --iters 300 act_layer=auto"),
                planted(".venv/bin/python -m eval --dataset=prostate --engine=opencv"),
                planted("python -m eval.regions", in_block=False)]  # prose: names the program
    for command in commands:
        assert python_errors(command, monkeypatch) == []


def test_a_wrong_path_is_caught():
    top, page, readme = tracked_top_level(), ROOT / "docs" / "planted.md", ROOT / "README.md"
    assert path_errors(page, "see `core/no_such.py`", top) == ["core/no_such.py does not exist"]
    assert path_errors(page, "`../shared/fig5.json`", top) == ["../shared/fig5.json does not exist"]
    assert path_errors(readme, "`../shared/fig5.json`", top) == \
        ["../shared/fig5.json lies outside the repository"]
    # a placeholder is any name; an output the project writes (in .gitignore) need not exist
    text = "`models/reference/<dataset>/manifest.json`, `bench/train_step.json`"
    assert path_errors(page, text, top) == []
