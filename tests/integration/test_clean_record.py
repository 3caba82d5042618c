"""git's re-check of a racily clean checkpoint is answered from the last clean's record
(clean_record.py), and a file changed since is never taken for the recorded one."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from tests.conftest import git


def write_model(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    save_file(
        {f"w{i}": rng.standard_normal((64, 256)).astype(np.float32) for i in range(3)}, str(path)
    )


def make_racy(repo: Path, model: Path) -> None:
    """Give the index the file's mtime: git then cannot trust the entry's stat data and
    cleans the file again to compare, as after an add in the same second as the write."""
    st = model.stat()
    os.utime(repo / ".git/index", ns=(st.st_atime_ns, st.st_mtime_ns))


def cleaned_by_hashing(repo: Path, *args: str) -> tuple[bool, str]:
    """Run git; whether its clean hashed the file, and git's stdout. A clean that hashes
    reads the chain cap (`git config theta.chain.max`) for the tensors it may have to store,
    which an answer from the record never needs."""
    trace = repo.parent / "trace.log"  # outside the work tree
    trace.unlink(missing_ok=True)
    out = git(*args, cwd=repo, env={"GIT_TRACE": str(trace)}).stdout
    return "config --get theta.chain.max" in trace.read_text(), out


def test_a_racy_recheck_is_answered_from_the_record(repo: Path) -> None:
    model = repo / "model.safetensors"
    write_model(model, 0)
    time.sleep(0.05)  # written before git starts: the clean can record what it read
    git("add", "model.safetensors", cwd=repo)
    records = list((repo / ".git/theta/cleaned").iterdir())
    assert len(records) == 1
    make_racy(repo, model)
    hashed, _ = cleaned_by_hashing(repo, "commit", "-qm", "v1")
    assert not hashed
    assert git("status", "--porcelain", cwd=repo).stdout == ""
    # the record gives git the manifest it committed
    make_racy(repo, model)
    hashed, out = cleaned_by_hashing(repo, "status", "--porcelain")
    assert not hashed and out == ""


def test_a_same_size_rewrite_with_its_mtime_put_back_is_still_seen(repo: Path) -> None:
    """What racy-git guards against, in the worst form: new bytes, same size, same mtime. The
    change time moved, so the record does not answer and git sees the modification."""
    model = repo / "model.safetensors"
    write_model(model, 0)
    time.sleep(0.05)
    git("add", "model.safetensors", cwd=repo)
    git("commit", "-qm", "v1", cwd=repo)
    st = model.stat()
    write_model(model, 1)
    assert model.stat().st_size == st.st_size
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))
    make_racy(repo, model)
    hashed, out = cleaned_by_hashing(repo, "status", "--porcelain")
    assert hashed and out == " M model.safetensors\n"


def test_a_file_written_as_git_starts_is_not_recorded(repo: Path) -> None:
    """Written less than the margin before `git add` started: git may have read it while it
    was being written, so nothing is recorded and the next re-check hashes."""
    model = repo / "model.safetensors"
    write_model(model, 0)
    git("add", "model.safetensors", cwd=repo)
    assert not (repo / ".git/theta/cleaned").exists()
    make_racy(repo, model)
    hashed, _ = cleaned_by_hashing(repo, "commit", "-qm", "v1")
    assert hashed


def test_other_bytes_under_the_name_are_cleaned(repo: Path, tmp_path: Path) -> None:
    """`git hash-object --path` sends another file's bytes under the tracked name: never
    answered from the tracked file's record."""
    model = repo / "model.safetensors"
    write_model(model, 0)
    time.sleep(0.05)
    git("add", "model.safetensors", cwd=repo)
    other = tmp_path / "other.safetensors"
    write_model(other, 2)
    staged = git("rev-parse", ":model.safetensors", cwd=repo).stdout.strip()
    blob = git("hash-object", "--path=model.safetensors", str(other), cwd=repo).stdout.strip()
    assert blob != staged
    plain = git("hash-object", "--path=model.safetensors", str(model), cwd=repo).stdout.strip()
    assert plain == staged


def test_another_manifest_staged_since_is_not_replaced_by_the_record(repo: Path) -> None:
    """`git theta add --fisher` stages the same bytes with Fisher extras after `git add`
    recorded the plain manifest: a re-check and a second `git add` keep the extras."""
    from tests.conftest import theta

    model = repo / "model.safetensors"
    write_model(model, 0)
    time.sleep(0.05)
    git("add", "model.safetensors", cwd=repo)
    assert (repo / ".git/theta/cleaned").is_dir()
    save_file({"w0": np.ones((64, 256), np.float32)}, str(repo.parent / "fisher.st"))
    theta("add", "model.safetensors", "--fisher", str(repo.parent / "fisher.st"), cwd=repo)
    staged = git("rev-parse", ":model.safetensors", cwd=repo).stdout
    make_racy(repo, model)
    assert git("status", "--porcelain", cwd=repo).stdout == "A  model.safetensors\n"
    git("add", "model.safetensors", cwd=repo)
    assert git("rev-parse", ":model.safetensors", cwd=repo).stdout == staged
    assert '"fisher"' in git("cat-file", "-p", ":model.safetensors", cwd=repo).stdout
