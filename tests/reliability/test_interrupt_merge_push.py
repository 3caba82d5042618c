"""SIGKILL git-theta during `git merge` and `git push`: nothing is lost, a rerun completes."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from tests.conftest import git
from tests.integration.transfer_helpers import bare_remote, fresh_home, run_git, store_of
from tests.reliability.helpers import assert_store_sound, delays, make_model, run_and_kill

# more for the long runs: GIT_THETA_KILLS=50 pytest tests/reliability (docs/reliability.md)
KILLS = int(os.environ.get("GIT_THETA_KILLS", "4"))


def _branches(repo: Path) -> dict[str, np.ndarray]:
    """main and `other` both changed every tensor of a 16-tensor model: all conflict."""
    model = repo / "model.safetensors"
    make_model(model, seed=1)
    git("add", "model.safetensors", cwd=repo)
    git("commit", "-qm", "base", cwd=repo)
    base = load_file(str(model))
    git("switch", "-qc", "other", cwd=repo)
    save_file({k: v + 1 for k, v in base.items()}, str(model))
    git("commit", "-qam", "other", cwd=repo)
    git("switch", "-q", "main", cwd=repo)
    save_file({k: v + 3 for k, v in base.items()}, str(model))
    git("commit", "-qam", "main", cwd=repo)
    return {k: ((v + 1) + (v + 3)) / 2 for k, v in base.items()}  # what `average` gives


def test_kill_during_merge_loses_nothing(repo: Path) -> None:
    expected = _branches(repo)
    merge = ["-c", "theta.merge.strategy=average", "merge", "-q", "-m", "merge", "other"]
    t = time.monotonic()
    git(*merge, cwd=repo)
    longest = time.monotonic() - t
    git("reset", "-q", "--hard", "HEAD~1", cwd=repo)
    killed = 0
    for delay in delays(4, KILLS, longest):
        code, was_killed = run_and_kill(merge, repo, delay)
        killed += was_killed
        assert_store_sound(repo)
        if code != 0:
            git("merge", "--abort", cwd=repo, check=False)
            git("reset", "-q", "--hard", cwd=repo)
            git(*merge, cwd=repo)  # the rerun completes
        merged = load_file(str(repo / "model.safetensors"))
        for k, v in expected.items():
            np.testing.assert_allclose(merged[k], v, rtol=0, atol=1e-6)
        assert git("status", "--porcelain", cwd=repo).stdout == ""
        git("reset", "-q", "--hard", "HEAD~1", cwd=repo)
    assert killed >= KILLS // 2


def test_kill_during_push_to_a_path_remote_loses_nothing(repo: Path, tmp_path: Path) -> None:
    bare = bare_remote(tmp_path)
    git("remote", "add", "origin", str(bare), cwd=repo)
    model = repo / "model.safetensors"
    make_model(model, seed=9, tensors=24)
    git("add", "model.safetensors", cwd=repo)
    git("commit", "-qm", "v", cwd=repo)
    t = time.monotonic()
    git("push", "-q", "origin", "main", cwd=repo)
    longest = time.monotonic() - t  # a whole push of one version, hook start included
    killed = 0
    for i, delay in enumerate(delays(5, KILLS, longest / 2)):
        make_model(model, seed=10 + i, tensors=24)
        git("add", "model.safetensors", cwd=repo)
        git("commit", "-qm", f"v{i}", cwd=repo)
        code, was_killed = run_and_kill(["push", "-q", "origin", "main"], repo, delay)
        killed += was_killed
        # the remote holds only whole, correct objects
        objects = bare / "theta" / "objects"
        for p in objects.rglob("*") if objects.exists() else []:
            if p.is_file():
                assert hashlib.sha256(p.read_bytes()).hexdigest() == p.name, p
        if code != 0:
            git("push", "-q", "origin", "main", cwd=repo)  # the rerun completes
        assert store_of(repo) <= store_of(bare)
    clone = tmp_path / "clone"
    run_git(["clone", "-q", str(bare), str(clone)], cwd=tmp_path, env=fresh_home(tmp_path))
    assert (clone / "model.safetensors").read_bytes() == model.read_bytes()
    assert killed >= 1
