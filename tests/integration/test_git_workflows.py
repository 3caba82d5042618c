"""Everyday git commands on a tracked checkpoint: the file comes back byte-identical and
`git status --porcelain` is quiet afterwards."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from tests.conftest import git, store_objects, theta

NAME = "model.safetensors"


def status(repo: Path) -> str:
    return git("status", "--porcelain", cwd=repo).stdout


def blob(repo: Path, spec: str) -> bytes:
    return subprocess.run(
        ["git", "cat-file", "blob", spec], cwd=repo, capture_output=True, check=True
    ).stdout


def write_version(repo: Path, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    tensors = {
        "embed.weight": rng.standard_normal((64, 16)).astype(np.float32),
        "layer.0.weight": rng.standard_normal((16, 16)).astype(np.float32),
        "layer.0.bias": np.full(16, seed, dtype=np.float32),
    }
    save_file(tensors, str(repo / NAME), metadata={"version": str(seed)})
    return (repo / NAME).read_bytes()


def two_commits(repo: Path) -> tuple[bytes, bytes]:
    v1 = write_version(repo, 1)
    git("add", NAME, cwd=repo)
    git("commit", "-qm", "v1", cwd=repo)
    v2 = write_version(repo, 2)
    git("commit", "-qam", "v2", cwd=repo)
    assert status(repo) == ""
    return v1, v2


def test_checkout_old_version_of_one_file(repo: Path) -> None:
    v1, v2 = two_commits(repo)
    git("checkout", "HEAD~1", "--", NAME, cwd=repo)
    assert (repo / NAME).read_bytes() == v1
    # the old version is staged, nothing else differs
    assert status(repo) == f"M  {NAME}\n"
    git("checkout", "HEAD", "--", NAME, cwd=repo)
    assert (repo / NAME).read_bytes() == v2
    assert status(repo) == ""


def test_switch_between_branches(repo: Path) -> None:
    v1, v2 = two_commits(repo)
    git("switch", "-q", "-c", "old", "HEAD~1", cwd=repo)
    assert (repo / NAME).read_bytes() == v1
    assert status(repo) == ""
    git("switch", "-q", "main", cwd=repo)
    assert (repo / NAME).read_bytes() == v2
    assert status(repo) == ""


def test_reset_hard(repo: Path) -> None:
    v1, _v2 = two_commits(repo)
    write_version(repo, 3)
    assert status(repo) == f" M {NAME}\n"
    git("reset", "-q", "--hard", "HEAD~1", cwd=repo)
    assert (repo / NAME).read_bytes() == v1
    assert status(repo) == ""


def test_stash_and_pop(repo: Path) -> None:
    _v1, v2 = two_commits(repo)
    v3 = write_version(repo, 3)
    git("stash", "-q", cwd=repo)
    assert (repo / NAME).read_bytes() == v2
    assert status(repo) == ""
    git("stash", "pop", "-q", cwd=repo)
    assert (repo / NAME).read_bytes() == v3
    assert status(repo) == f" M {NAME}\n"
    git("commit", "-qam", "v3", cwd=repo)
    assert status(repo) == ""


def test_worktree_shares_the_store_of_the_common_git_dir(repo: Path, tmp_path: Path) -> None:
    v1, v2 = two_commits(repo)
    before = store_objects(repo)
    other = tmp_path / "second-worktree"
    git("worktree", "add", "-q", str(other), "HEAD~1", cwd=repo)
    assert (other / NAME).read_bytes() == v1
    assert status(other) == ""
    # no second store anywhere: only <common git dir>/theta exists
    stores = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("theta") if p.is_dir())
    assert stores == ["repo/.git/theta"]
    assert not (other / ".git").is_dir()  # a worktree's .git is a file pointing back

    # a commit in the second worktree stores its objects in the shared store
    rng = np.random.default_rng(9)
    save_file({"w": rng.standard_normal((8, 8)).astype(np.float32)}, str(other / "new.safetensors"))
    git("add", "new.safetensors", cwd=other)
    git("commit", "-qm", "in worktree", cwd=other)
    assert len(store_objects(repo) - before) == 2  # the new tensor and its skeleton
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("theta")) == [
        "repo/.git/theta"
    ]
    assert (repo / NAME).read_bytes() == v2


def test_untrack_then_commit_stores_the_file_as_plain_bytes(repo: Path) -> None:
    """Documented: untrack removes the .gitattributes line; the next add stores the real bytes
    in git; history keeps the manifests (and old commits still check out through the filter
    while it is installed)."""
    v1, v2 = two_commits(repo)
    out = theta("untrack", "*.safetensors", cwd=repo).stdout
    assert "untracked '*.safetensors'" in out
    assert "*.safetensors" not in (repo / ".gitattributes").read_text()
    git("add", "--renormalize", ".", cwd=repo)
    git("add", ".gitattributes", cwd=repo)
    git("commit", "-qm", "untrack", cwd=repo)
    assert status(repo) == ""
    assert blob(repo, f"HEAD:{NAME}") == v2
    # the older commit, which tracked the file, still checks out through git-theta
    git("switch", "-q", "--detach", "HEAD~2", cwd=repo)
    assert (repo / NAME).read_bytes() == v1
    assert status(repo) == ""


def test_uninstall_leaves_manifests_in_place(repo: Path) -> None:
    """Documented: uninstall removes the filter from git's config. The working tree keeps the
    checkpoint; files checked out afterwards are the manifest text; reinstalling and checking
    the file out again brings the checkpoint back."""
    v1, v2 = two_commits(repo)
    out = theta("uninstall", "--local", cwd=repo).stdout
    assert "filter.theta" in out
    assert (
        git("config", "--local", "--get", "filter.theta.process", cwd=repo, check=False).stdout
        == ""
    )
    assert (repo / NAME).read_bytes() == v2
    git("checkout", "HEAD~1", "--", NAME, cwd=repo)
    text = (repo / NAME).read_bytes()
    assert text.startswith(b"git-theta-manifest 1\nformat safetensors\n")
    assert text == blob(repo, f"HEAD~1:{NAME}")
    theta("install", "--local", cwd=repo)
    (repo / NAME).unlink()
    git("checkout", "HEAD~1", "--", NAME, cwd=repo)
    assert (repo / NAME).read_bytes() == v1
    git("checkout", "HEAD", "--", NAME, cwd=repo)
    assert (repo / NAME).read_bytes() == v2
    assert status(repo) == ""


def test_line_ending_conversion_never_touches_manifests(repo: Path) -> None:
    """core.autocrlf=true (the default of git for Windows) must not turn the manifest's LF
    into CRLF before smudge, nor change the stored text."""
    git("config", "core.autocrlf", "true", cwd=repo)
    v1, v2 = two_commits(repo)
    assert b"\r" not in blob(repo, f"HEAD:{NAME}")
    (repo / NAME).unlink()
    git("checkout", "--", NAME, cwd=repo)
    assert (repo / NAME).read_bytes() == v2
    git("checkout", "HEAD~1", "--", NAME, cwd=repo)
    assert (repo / NAME).read_bytes() == v1
    git("reset", "-q", "--hard", cwd=repo)
    assert (repo / NAME).read_bytes() == v2
    assert status(repo) == ""
