"""Several git commands at once, in worktrees sharing one store, never corrupt it."""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.conftest import git
from tests.reliability.helpers import assert_store_sound, make_model

ROUNDS = 4


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)


def _all_at_once(*jobs: tuple[list[str], Path]) -> None:
    with ThreadPoolExecutor(len(jobs)) as ex:
        results = [ex.submit(_git, args, cwd) for args, cwd in jobs]
        for res in results:
            assert res.result().returncode == 0, res.result().stderr


def test_adds_and_checkouts_in_three_worktrees_at_once(repo: Path, tmp_path: Path) -> None:
    make_model(repo / "model.safetensors", seed=100)
    base = (repo / "model.safetensors").read_bytes()
    git("add", "model.safetensors", cwd=repo)
    git("commit", "-qm", "base", cwd=repo)
    b, c = tmp_path / "b", tmp_path / "c"
    git("worktree", "add", "-q", "-b", "b", str(b), cwd=repo)
    git("worktree", "add", "-q", "-b", "c", str(c), cwd=repo)
    for r in range(ROUNDS):
        make_model(repo / "model.safetensors", seed=200 + r)
        make_model(repo / "second.safetensors", seed=300 + r)
        # b adds the very same tensors at the same time (both race to write each object)
        shutil.copyfile(repo / "model.safetensors", b / "new.safetensors")
        # c reads the store while the others write it
        (c / "model.safetensors").unlink()
        _all_at_once(
            (["add", "model.safetensors", "second.safetensors"], repo),
            (["add", "new.safetensors"], b),
            (["checkout", "--", "model.safetensors"], c),
        )
        assert_store_sound(repo)
        assert (c / "model.safetensors").read_bytes() == base
        git("commit", "-qm", f"a{r}", cwd=repo)
        git("commit", "-qm", f"b{r}", cwd=b)
        expected = (repo / "model.safetensors").read_bytes()
        (repo / "model.safetensors").unlink()
        (b / "new.safetensors").unlink()
        _all_at_once(
            (["checkout", "--", "model.safetensors"], repo),
            (["checkout", "--", "new.safetensors"], b),
        )
        assert (repo / "model.safetensors").read_bytes() == expected
        assert (b / "new.safetensors").read_bytes() == expected
    # one store, in the common git dir: no worktree made one of its own
    assert not list((repo / ".git" / "worktrees").rglob("theta"))
    assert_store_sound(repo)
