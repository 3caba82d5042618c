"""Which objects a push sends: merges, rebases, history made before the hook existed."""

from __future__ import annotations

from pathlib import Path

from safetensors.numpy import save_file

from tests.conftest import git
from tests.integration.transfer_helpers import (
    fresh_home,
    lfs_remote,
    run_git,
    run_theta,
    store_of,
    write_model,
)
from tests.lfs_server import LfsServer


def test_merge_commit_with_its_own_checkpoint_is_pushed(
    repo: Path, tmp_path: Path, lfs_server: LfsServer
) -> None:
    bare, name = lfs_remote(repo, tmp_path, lfs_server)
    write_model(repo / "a.safetensors", seed=1)
    git("add", "a.safetensors", cwd=repo)
    git("commit", "-qm", "base", cwd=repo)
    git("push", "-q", "origin", "main", cwd=repo)
    git("switch", "-qc", "side", cwd=repo)
    write_model(repo / "b.safetensors", seed=2)
    git("add", "b.safetensors", cwd=repo)
    git("commit", "-qm", "side", cwd=repo)
    git("switch", "-q", "main", cwd=repo)
    write_model(repo / "c.safetensors", seed=3)
    git("add", "c.safetensors", cwd=repo)
    git("commit", "-qm", "main", cwd=repo)
    git("merge", "-q", "--no-ff", "--no-commit", "side", cwd=repo)
    write_model(repo / "merged.safetensors", seed=4)  # only the merge commit has it
    git("add", "merged.safetensors", cwd=repo)
    git("commit", "-qm", "merge", cwd=repo)
    assert len(git("rev-list", "--parents", "-n1", "HEAD", cwd=repo).stdout.split()) == 3
    git("push", "-q", "origin", "main", cwd=repo)
    assert lfs_server.objects(name) == store_of(repo)

    env = fresh_home(tmp_path)
    clone = tmp_path / "clone"
    run_git(
        ["clone", "-q", "-c", f"lfs.url={lfs_server.endpoint(name)}", str(bare), str(clone)],
        cwd=tmp_path,
        env=env,
    )
    for f in ("a", "b", "c", "merged"):
        p = f"{f}.safetensors"
        assert (clone / p).read_bytes() == (repo / p).read_bytes()


def test_history_made_before_the_hook_existed_is_pushed(
    repo: Path, tmp_path: Path, lfs_server: LfsServer
) -> None:
    bare, name = lfs_remote(repo, tmp_path, lfs_server)
    for seed in (1, 2, 3):
        write_model(repo / "m.safetensors", seed=seed)
        git("add", "m.safetensors", cwd=repo)
        git("commit", "-qm", f"v{seed}", cwd=repo)
    # pushed by a git-theta without hooks (--no-verify runs no pre-push hook)
    git("push", "-q", "--no-verify", "origin", "main", cwd=repo)
    assert lfs_server.objects(name) == set()
    write_model(repo / "n.safetensors", seed=9)
    git("add", "n.safetensors", cwd=repo)
    git("commit", "-qm", "after install", cwd=repo)
    git("push", "-q", "origin", "main", cwd=repo)
    # the remote-tracking ref says the old commits are there; their objects are not:
    # only the new commit's objects went with the hook ...
    assert lfs_server.objects(name) < store_of(repo)
    # ... and `git theta push` (all of history, the server asked) completes it
    out = run_theta(["push"], cwd=repo)
    assert lfs_server.objects(name) == store_of(repo)
    assert "already there" in out.stderr
    env = fresh_home(tmp_path)
    clone = tmp_path / "clone"
    run_git(
        ["clone", "-q", "-c", f"lfs.url={lfs_server.endpoint(name)}", str(bare), str(clone)],
        cwd=tmp_path,
        env=env,
    )
    run_git(["checkout", "-q", "HEAD~2"], cwd=clone, env=env)
    git("checkout", "-q", "HEAD~2", cwd=repo)
    assert (clone / "m.safetensors").read_bytes() == (repo / "m.safetensors").read_bytes()


def test_first_push_sends_every_version_in_history(
    repo: Path, tmp_path: Path, lfs_server: LfsServer
) -> None:
    _bare, name = lfs_remote(repo, tmp_path, lfs_server)
    for seed in (1, 2):
        write_model(repo / "m.safetensors", seed=seed)
        git("add", "m.safetensors", cwd=repo)
        git("commit", "-qm", f"v{seed}", cwd=repo)
    git("push", "-q", "origin", "main", cwd=repo)
    assert lfs_server.objects(name) == store_of(repo)


def test_rebased_branch_force_pushed(repo: Path, tmp_path: Path, lfs_server: LfsServer) -> None:
    bare, name = lfs_remote(repo, tmp_path, lfs_server)
    tensors = write_model(repo / "m.safetensors", seed=1)
    git("add", "m.safetensors", cwd=repo)
    git("commit", "-qm", "v1", cwd=repo)
    git("push", "-q", "-u", "origin", "main", cwd=repo)
    git("switch", "-qc", "feature", cwd=repo)
    tensors["bias"] = tensors["bias"] + 1
    save_file(tensors, str(repo / "m.safetensors"))
    git("commit", "-qam", "feature", cwd=repo)
    git("push", "-q", "origin", "feature", cwd=repo)
    git("switch", "-q", "main", cwd=repo)
    write_model(repo / "other.safetensors", seed=5)
    git("add", "other.safetensors", cwd=repo)
    git("commit", "-qm", "main moves", cwd=repo)
    git("push", "-q", "origin", "main", cwd=repo)
    git("switch", "-q", "feature", cwd=repo)
    git("rebase", "-q", "main", cwd=repo)
    tensors["bias"] = tensors["bias"] * 3  # and amend it with new content
    save_file(tensors, str(repo / "m.safetensors"))
    git("commit", "-q", "--amend", "-am", "feature, rebased", cwd=repo)
    git("push", "-q", "--force", "origin", "feature", cwd=repo)
    # every version ever pushed (the old feature tip too) is on the server
    assert lfs_server.objects(name) == store_of(repo)
    env = fresh_home(tmp_path)
    clone = tmp_path / "clone"
    run_git(
        [
            "clone",
            "-q",
            "-b",
            "feature",
            "-c",
            f"lfs.url={lfs_server.endpoint(name)}",
            str(bare),
            str(clone),
        ],
        cwd=tmp_path,
        env=env,
    )
    assert (clone / "m.safetensors").read_bytes() == (repo / "m.safetensors").read_bytes()


def test_deleting_a_remote_branch_sends_nothing(
    repo: Path, tmp_path: Path, lfs_server: LfsServer
) -> None:
    _bare, name = lfs_remote(repo, tmp_path, lfs_server)
    write_model(repo / "m.safetensors", seed=1)
    git("add", "m.safetensors", cwd=repo)
    git("commit", "-qm", "v1", cwd=repo)
    git("push", "-q", "origin", "main", "main:gone", cwd=repo)
    sent = lfs_server.objects(name)
    assert sent == store_of(repo)
    proc = git("push", "origin", "--delete", "gone", cwd=repo)
    assert "git-theta" not in proc.stderr
    assert lfs_server.objects(name) == sent
