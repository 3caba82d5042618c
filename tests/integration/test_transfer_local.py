"""Path and file:// remotes (no server), skip-smudge clones, `git theta fetch` / `pull`."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import git
from tests.integration.transfer_helpers import (
    bare_remote,
    fresh_home,
    run_git,
    run_theta,
    store_of,
    write_model,
)


def _pushed(repo: Path, tmp_path: Path) -> Path:
    bare = bare_remote(tmp_path)
    git("remote", "add", "origin", str(bare), cwd=repo)
    write_model(repo / "m.safetensors", seed=1)
    write_model(repo / "sub.safetensors", seed=2, n=3)
    git("add", "m.safetensors", "sub.safetensors", cwd=repo)
    git("commit", "-qm", "models", cwd=repo)
    git("push", "-q", "origin", "main", cwd=repo)
    return bare


def test_path_remote_push_and_clone(repo: Path, tmp_path: Path) -> None:
    bare = _pushed(repo, tmp_path)
    assert store_of(bare) == store_of(repo)
    env = fresh_home(tmp_path)
    clone = tmp_path / "clone"
    run_git(["clone", "-q", str(bare), str(clone)], cwd=tmp_path, env=env)
    for p in ("m.safetensors", "sub.safetensors"):
        assert (clone / p).read_bytes() == (repo / p).read_bytes()
    assert store_of(clone) == store_of(repo)
    # and back: a change pushed from the clone arrives in the original
    write_model(clone / "m.safetensors", seed=7)
    run_git(["commit", "-qam", "from clone"], cwd=clone, env=env)
    run_git(["push", "-q", "origin", "main"], cwd=clone, env=env)
    assert store_of(bare) == store_of(clone)
    git("pull", "-q", "origin", "main", cwd=repo)
    assert (repo / "m.safetensors").read_bytes() == (clone / "m.safetensors").read_bytes()


def test_file_url_remote(repo: Path, tmp_path: Path) -> None:
    bare = bare_remote(tmp_path)
    git("remote", "add", "origin", bare.as_uri(), cwd=repo)
    write_model(repo / "m.safetensors", seed=3)
    git("add", "m.safetensors", cwd=repo)
    git("commit", "-qm", "v1", cwd=repo)
    git("push", "-q", "origin", "main", cwd=repo)
    assert store_of(bare) == store_of(repo)
    env = fresh_home(tmp_path)
    clone = tmp_path / "clone"
    run_git(["clone", "-q", bare.as_uri(), str(clone)], cwd=tmp_path, env=env)
    assert (clone / "m.safetensors").read_bytes() == (repo / "m.safetensors").read_bytes()


def _manifest_clone(repo: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """`repo` pushed to a bare path remote and cloned with GIT_THETA_SKIP_SMUDGE=1 (files
    hold manifests, the store is empty); the clone and an environment without the skip."""
    bare = _pushed(repo, tmp_path)
    env = fresh_home(tmp_path)
    clone = tmp_path / "clone"
    run_git(
        ["clone", "-q", str(bare), str(clone)],
        cwd=tmp_path,
        env={**env, "GIT_THETA_SKIP_SMUDGE": "1"},
    )
    return clone, env


def test_skip_smudge_clone_then_fetch_and_pull(repo: Path, tmp_path: Path) -> None:
    clone, env = _manifest_clone(repo, tmp_path)
    text = (clone / "m.safetensors").read_bytes()
    assert text.startswith(b"git-theta-manifest 1\n")
    assert store_of(clone) == set()
    assert run_git(["status", "--porcelain"], cwd=clone, env=env).stdout == ""
    out = run_theta(["fetch", "origin"], cwd=clone, env=env)
    assert store_of(clone) == store_of(repo)
    assert f"{len(store_of(repo))} objects" in out.stderr
    assert (clone / "m.safetensors").read_bytes() == text  # fetch does not touch files
    out = run_theta(["pull"], cwd=clone, env=env)
    assert "checked out m.safetensors" in out.stdout
    for p in ("m.safetensors", "sub.safetensors"):
        assert (clone / p).read_bytes() == (repo / p).read_bytes()
    assert run_git(["status", "--porcelain"], cwd=clone, env=env).stdout == ""


def test_pull_alone_downloads_and_checks_out(repo: Path, tmp_path: Path) -> None:
    clone, env = _manifest_clone(repo, tmp_path)
    run_theta(["pull"], cwd=clone, env=env)
    assert (clone / "m.safetensors").read_bytes() == (repo / "m.safetensors").read_bytes()


def test_git_theta_checkout_downloads_what_it_writes(repo: Path, tmp_path: Path) -> None:
    clone, env = _manifest_clone(repo, tmp_path)
    out = run_theta(["checkout", "m.safetensors"], cwd=clone, env=env)
    assert out.stdout == "checked out m.safetensors\n"
    assert (clone / "m.safetensors").read_bytes() == (repo / "m.safetensors").read_bytes()
    assert (clone / "sub.safetensors").read_bytes().startswith(b"git-theta-manifest")
    assert run_git(["status", "--porcelain"], cwd=clone, env=env).stdout == ""


def test_missing_on_path_remote_is_a_clear_error(repo: Path, tmp_path: Path) -> None:
    bare = _pushed(repo, tmp_path)
    victim = sorted(store_of(bare))[0]
    next((bare / "theta" / "objects").rglob(victim)).unlink()
    env = fresh_home(tmp_path)
    clone = tmp_path / "clone"
    proc = run_git(["clone", "-q", str(bare), str(clone)], cwd=tmp_path, env=env, check=False)
    assert proc.returncode != 0
    assert victim[:12] in proc.stderr
    assert "origin" in proc.stderr


def test_progress_line_when_asked(repo: Path, tmp_path: Path) -> None:
    bare = bare_remote(tmp_path)
    git("remote", "add", "origin", str(bare), cwd=repo)
    write_model(repo / "m.safetensors", seed=1)
    git("add", "m.safetensors", cwd=repo)
    git("commit", "-qm", "v1", cwd=repo)
    n = len(store_of(repo))
    proc = git("push", "origin", "main", cwd=repo, env={"GIT_THETA_PROGRESS": "1"})
    assert f"git-theta: uploading to origin: {n}/{n} objects" in proc.stderr
    assert f"git-theta: uploaded to origin: {n} objects" in proc.stderr


def test_history_from_before_git_theta_was_used(tmp_path: Path) -> None:
    """Commits holding raw checkpoints (no git-theta yet), then git-theta: all of it pushes
    and clones, the old commits' files as plain blobs."""
    repo = tmp_path / "old"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    write_model(repo / "m.safetensors", seed=1)
    git("add", "m.safetensors", cwd=repo)
    git("commit", "-qm", "raw checkpoint, before git-theta", cwd=repo)
    raw = (repo / "m.safetensors").read_bytes()
    run_theta(["install", "--local"], cwd=repo)
    run_theta(["track", "*.safetensors"], cwd=repo)
    write_model(repo / "m.safetensors", seed=2)
    git("add", ".gitattributes", "m.safetensors", cwd=repo)
    git("commit", "-qm", "now with git-theta", cwd=repo)
    bare = bare_remote(tmp_path)
    git("remote", "add", "origin", str(bare), cwd=repo)
    git("push", "-q", "origin", "main", cwd=repo)
    assert store_of(bare) == store_of(repo) != set()
    env = fresh_home(tmp_path)
    clone = tmp_path / "clone"
    run_git(["clone", "-q", str(bare), str(clone)], cwd=tmp_path, env=env)
    assert (clone / "m.safetensors").read_bytes() == (repo / "m.safetensors").read_bytes()
    run_git(["checkout", "-q", "HEAD~1"], cwd=clone, env=env)
    assert (clone / "m.safetensors").read_bytes() == raw
