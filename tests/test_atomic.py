"""core.atomic's folder replacement: a reader finds the old folder or the whole new one, never
none, and nothing is left beside it; the exchange in one step, and the fallback where a file
system cannot exchange."""
import os

import pytest

from core import atomic
from core.atomic import atomic_dir


def folder(path, text):
    path.mkdir()
    (path / "a.txt").write_text(text)
    (path / "sub").mkdir()
    (path / "sub" / "b.txt").write_text(text * 2)
    return path


def test_atomic_dir_replaces_a_folder_whole_and_leaves_nothing_beside(tmp_path):
    dest = folder(tmp_path / "pack", "old")
    with atomic_dir(dest) as tmp:
        (tmp / "a.txt").write_text("new")
    assert sorted(p.name for p in dest.rglob("*")) == ["a.txt"] and (dest / "a.txt").read_text() == "new"
    assert os.listdir(tmp_path) == ["pack"]


def test_the_swap_is_one_step(tmp_path):
    old, new = folder(tmp_path / "old", "o"), folder(tmp_path / "new", "n")
    if not atomic._exchange(new, old):
        pytest.skip("this file system cannot exchange two paths")
    assert (old / "a.txt").read_text() == "n" and (new / "a.txt").read_text() == "o"


def test_without_an_exchange_the_two_renames_still_replace_it(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    dest = folder(tmp_path / "pack", "old")
    with atomic_dir(dest) as tmp:
        (tmp / "a.txt").write_text("new")
    assert (dest / "a.txt").read_text() == "new" and not (dest / "sub").exists()
    assert os.listdir(tmp_path) == ["pack"]


def test_a_failing_block_keeps_the_old_folder(tmp_path):
    dest = folder(tmp_path / "pack", "old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(dest) as tmp:
            (tmp / "a.txt").write_text("new")
            raise KeyboardInterrupt
    assert (dest / "a.txt").read_text() == "old" and os.listdir(tmp_path) == ["pack"]
