"""A run's git tags name the code it runs: read once per process, so the later jobs of a multirun in one process are
not credited to a commit made while the sweep ran (their code is the one imported at the first job)."""

from __future__ import annotations

import subprocess

from hicra.tracking import store


def git(root, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def test_the_state_is_read_once_per_process_and_a_later_commit_does_not_move_it(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "_GIT_STATES", {})
    git(tmp_path, "init", "-q")
    for key, value in (("user.email", "t@example.org"), ("user.name", "t")):
        git(tmp_path, "config", key, value)
    (tmp_path / "code.py").write_text("x = 1\n")
    git(tmp_path, "add", "code.py")
    git(tmp_path, "commit", "-q", "-m", "first")
    first = git(tmp_path, "rev-parse", "HEAD")
    assert store.git_state(tmp_path) == {"git.sha": first, "git.dirty": "false"}
    (tmp_path / "code.py").write_text("x = 2\n")
    git(tmp_path, "commit", "-q", "-am", "second, while the sweep runs")
    assert store.git_state(tmp_path) == {"git.sha": first, "git.dirty": "false"}  # the code this process imported
    assert store._read_git_state(tmp_path)["git.sha"] != first  # what a fresh process would record
    store.git_state(tmp_path)["git.sha"] = "changed by a caller"
    assert store.git_state(tmp_path)["git.sha"] == first  # callers get a copy


def test_outside_git_the_state_is_unknown(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "_GIT_STATES", {})
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert store.git_state(tmp_path)["git.sha"] == "unknown"
