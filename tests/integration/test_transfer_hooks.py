"""The pre-push hook chains with a user's hook and with Git LFS's, never overwriting them."""

from __future__ import annotations

import stat
from pathlib import Path

from tests.conftest import git
from tests.integration.transfer_helpers import (
    bare_remote,
    fresh_home,
    repo_name,
    run_git,
    run_theta,
    store_of,
    write_model,
)
from tests.lfs_server import LfsServer

USER_HOOK = """#!/bin/sh
echo "args: $1 $2" > "$(git rev-parse --git-dir)/user-hook-ran"
while read local_ref local_sha remote_ref remote_sha; do
    echo "line: $local_ref $remote_ref" >> "$(git rev-parse --git-dir)/user-hook-ran"
done
exit ${USER_HOOK_EXIT:-0}
"""


def _user_hook(repo: Path) -> Path:
    run_theta(["uninstall", "--local"], cwd=repo)
    hook = repo / ".git" / "hooks" / "pre-push"
    assert not hook.exists()
    hook.write_text(USER_HOOK)
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    run_theta(["install", "--local"], cwd=repo)
    run_theta(["install", "--local"], cwd=repo)  # twice: still one chain
    return hook


def test_existing_user_hook_still_runs_with_the_same_input(repo: Path, tmp_path: Path) -> None:
    hook = _user_hook(repo)
    chained = hook.with_name("pre-push.theta-chained")
    assert chained.read_text() == USER_HOOK
    assert "git-theta pre-push hook" in hook.read_text()
    bare = bare_remote(tmp_path)
    git("remote", "add", "origin", str(bare), cwd=repo)
    write_model(repo / "m.safetensors", seed=1)
    git("add", "m.safetensors", cwd=repo)
    git("commit", "-qm", "v1", cwd=repo)
    git("push", "-q", "origin", "main", cwd=repo)
    ran = (repo / ".git" / "user-hook-ran").read_text().splitlines()
    assert ran == [f"args: origin {bare}", "line: refs/heads/main refs/heads/main"]
    assert store_of(bare) == store_of(repo)


def test_a_failing_user_hook_still_stops_the_push(repo: Path, tmp_path: Path) -> None:
    _user_hook(repo)
    bare = bare_remote(tmp_path)
    git("remote", "add", "origin", str(bare), cwd=repo)
    write_model(repo / "m.safetensors", seed=1)
    git("add", "m.safetensors", cwd=repo)
    git("commit", "-qm", "v1", cwd=repo)
    proc = git("push", "-q", "origin", "main", cwd=repo, check=False, env={"USER_HOOK_EXIT": "1"})
    assert proc.returncode != 0
    assert git("ls-remote", str(bare), cwd=repo).stdout == ""


def test_uninstall_puts_the_user_hook_back(repo: Path) -> None:
    hook = _user_hook(repo)
    run_theta(["uninstall", "--local"], cwd=repo)
    assert hook.read_text() == USER_HOOK
    assert not hook.with_name("pre-push.theta-chained").exists()


def test_coexists_with_git_lfs(repo: Path, tmp_path: Path, lfs_server: LfsServer) -> None:
    run_theta(["uninstall", "--local"], cwd=repo)
    git("lfs", "install", "--local", cwd=repo)
    lfs_hook = (repo / ".git" / "hooks" / "pre-push").read_text()
    assert "git lfs pre-push" in lfs_hook
    run_theta(["install", "--local"], cwd=repo)
    assert (repo / ".git" / "hooks" / "pre-push.theta-chained").read_text() == lfs_hook
    name = repo_name()
    bare = bare_remote(tmp_path)
    git("remote", "add", "origin", str(bare), cwd=repo)
    git("config", "remote.origin.lfsurl", lfs_server.endpoint(name), cwd=repo)
    git("config", "lfs.locksverify", "false", cwd=repo)
    git("lfs", "track", "*.dat", cwd=repo)
    data = bytes(range(256)) * 4000
    (repo / "blob.dat").write_bytes(data)
    write_model(repo / "m.safetensors", seed=4)
    git("add", ".gitattributes", "blob.dat", "m.safetensors", cwd=repo)
    git("commit", "-qm", "both", cwd=repo)
    git("push", "-q", "origin", "main", cwd=repo)
    import hashlib

    lfs_oid = hashlib.sha256(data).hexdigest()
    assert lfs_server.objects(name) == store_of(repo) | {lfs_oid}

    env = fresh_home(tmp_path)
    run_git(["lfs", "install"], cwd=tmp_path, env=env)
    clone = tmp_path / "clone"
    run_git(
        ["clone", "-q", "-c", f"lfs.url={lfs_server.endpoint(name)}", str(bare), str(clone)],
        cwd=tmp_path,
        env=env,
    )
    assert (clone / "blob.dat").read_bytes() == data
    assert (clone / "m.safetensors").read_bytes() == (repo / "m.safetensors").read_bytes()


def test_git_lfs_installed_after_git_theta_still_pushes(
    repo: Path, tmp_path: Path, lfs_server: LfsServer
) -> None:
    # git-lfs refuses to replace our hook (exit 2) but configures its filter
    assert git("lfs", "install", "--local", cwd=repo, check=False).returncode == 2
    assert not (repo / ".git" / "hooks" / "pre-push.theta-chained").exists()
    name = repo_name()
    bare = bare_remote(tmp_path)
    git("remote", "add", "origin", str(bare), cwd=repo)
    git("config", "remote.origin.lfsurl", lfs_server.endpoint(name), cwd=repo)
    git("config", "lfs.locksverify", "false", cwd=repo)
    git("lfs", "track", "*.dat", cwd=repo)
    data = b"lfs object " * 1000
    (repo / "blob.dat").write_bytes(data)
    write_model(repo / "m.safetensors", seed=5)
    git("add", ".gitattributes", "blob.dat", "m.safetensors", cwd=repo)
    git("commit", "-qm", "both", cwd=repo)
    git("push", "-q", "origin", "main", cwd=repo)
    import hashlib

    assert lfs_server.objects(name) == store_of(repo) | {hashlib.sha256(data).hexdigest()}
