"""Push to and clone from a real Git LFS server (giftless on 127.0.0.1) through real git."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import git
from tests.integration.transfer_helpers import (
    bare_remote,
    fresh_home,
    lfs_remote,
    repo_name,
    run_git,
    store_of,
    write_model,
)
from tests.lfs_server import LfsServer


def test_push_then_clone_with_fresh_home_is_byte_identical(
    repo: Path, tmp_path: Path, lfs_server: LfsServer, minilm: Path
) -> None:
    bare, name = lfs_remote(repo, tmp_path, lfs_server)
    (repo / "model.safetensors").write_bytes(minilm.read_bytes())
    write_model(repo / "small.safetensors", seed=1)
    git("add", "model.safetensors", "small.safetensors", cwd=repo)
    git("commit", "-qm", "models", cwd=repo)
    git("push", "-q", "origin", "main", cwd=repo)
    # exactly the local objects went to the server
    assert lfs_server.objects(name) == store_of(repo)
    assert not store_of(bare)  # an LFS URL is configured: nothing goes into the bare repo

    env = fresh_home(tmp_path)
    clone = tmp_path / "clone"
    run_git(
        ["clone", "-q", "-c", f"lfs.url={lfs_server.endpoint(name)}", str(bare), str(clone)],
        cwd=tmp_path,
        env=env,
    )
    assert (clone / "model.safetensors").read_bytes() == minilm.read_bytes()
    assert (clone / "small.safetensors").read_bytes() == (repo / "small.safetensors").read_bytes()
    assert run_git(["status", "--porcelain"], cwd=clone, env=env).stdout == ""
    assert store_of(clone) == store_of(repo)
    # the clone got its pre-push hook on first checkout (global install)
    assert "git-theta pre-push hook" in (clone / ".git" / "hooks" / "pre-push").read_text()


def test_second_push_sends_only_new_objects_and_lfsconfig_is_read(
    repo: Path, tmp_path: Path, lfs_server: LfsServer
) -> None:
    name = repo_name()
    bare = bare_remote(tmp_path)
    git("remote", "add", "origin", str(bare), cwd=repo)
    (repo / ".lfsconfig").write_text(f'[lfs]\n\turl = "{lfs_server.endpoint(name)}"\n')
    tensors = write_model(repo / "m.safetensors", seed=2)
    git("add", ".lfsconfig", "m.safetensors", cwd=repo)
    git("commit", "-qm", "v1", cwd=repo)
    git("push", "-q", "origin", "main", cwd=repo)
    first = lfs_server.objects(name)
    assert first == store_of(repo)

    from safetensors.numpy import save_file

    tensors["layer0.weight"] = tensors["layer0.weight"] * 2
    save_file(tensors, str(repo / "m.safetensors"))
    git("commit", "-qam", "v2", cwd=repo)
    before = store_of(repo)
    out = git("push", "origin", "main", cwd=repo).stderr
    assert lfs_server.objects(name) == before
    assert len(before - first) == 1
    assert "1 objects" in out

    env = fresh_home(tmp_path)
    clone = tmp_path / "clone"
    run_git(["clone", "-q", str(bare), str(clone)], cwd=tmp_path, env=env)  # .lfsconfig only
    assert (clone / "m.safetensors").read_bytes() == (repo / "m.safetensors").read_bytes()
    run_git(["checkout", "-q", "HEAD~1"], cwd=clone, env=env)
    git("checkout", "-q", "HEAD~1", cwd=repo)
    assert (clone / "m.safetensors").read_bytes() == (repo / "m.safetensors").read_bytes()
