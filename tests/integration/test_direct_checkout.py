"""Large checkpoints are written by git-theta itself, not through git's in-memory buffer."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.conftest import git, theta


def _model(path: Path, seed: int, n: int = 4, rows: int = 256) -> bytes:
    rng = np.random.default_rng(seed)
    save_file(
        {f"w{i}": rng.normal(0, 0.02, (rows, 512)).astype(np.float32) for i in range(n)}, str(path)
    )
    return path.read_bytes()


def _committed(repo: Path, seed: int, **shape: int) -> tuple[Path, bytes]:
    """model.safetensors written (seed, shape) and committed; the file and its bytes."""
    model = repo / "model.safetensors"
    data = _model(model, seed, **shape)
    git("add", "model.safetensors", cwd=repo)
    git("commit", "-qm", f"model {seed}", cwd=repo)
    return model, data


@pytest.fixture
def always_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_THETA_DIRECT_CHECKOUT", "always")


def _clean(repo: Path) -> None:
    assert git("status", "--porcelain", cwd=repo).stdout == ""


@pytest.mark.usefixtures("always_direct")
def test_checkout_switch_reset_stash_write_the_real_file(repo: Path) -> None:
    model, v1 = _committed(repo, 1)
    git("switch", "-qc", "other", cwd=repo)
    v2 = _model(model, 2)
    git("commit", "-qam", "v2", cwd=repo)

    git("switch", "-q", "main", cwd=repo)
    assert model.read_bytes() == v1
    _clean(repo)
    git("checkout", "-q", "other", "--", "model.safetensors", cwd=repo)
    assert model.read_bytes() == v2
    git("reset", "-q", "--hard", cwd=repo)
    assert model.read_bytes() == v1
    _clean(repo)
    _model(model, 3)
    git("stash", "-q", cwd=repo)
    assert model.read_bytes() == v1
    _clean(repo)
    git("stash", "pop", "-q", cwd=repo)
    assert model.read_bytes() == _model(repo / "scratch.bin", 3)
    (repo / "scratch.bin").unlink()


@pytest.mark.usefixtures("always_direct")
def test_clone_and_worktree_get_real_files(repo: Path, tmp_path: Path) -> None:
    _, v1 = _committed(repo, 4)
    wt = tmp_path / "wt"
    git("worktree", "add", "-q", str(wt), "-b", "wt", cwd=repo)
    assert (wt / "model.safetensors").read_bytes() == v1
    _clean(wt)


@pytest.mark.usefixtures("always_direct")
def test_the_index_knows_the_written_file_without_reading_it(repo: Path) -> None:
    """git-theta records the new file's stat data in the index itself: git status then has
    nothing to re-read, so it runs no filter (one that would fail is configured here)."""
    model, v1 = _committed(repo, 9)
    model.unlink()
    git("checkout", "--", "model.safetensors", cwd=repo)
    assert model.read_bytes() == v1
    debug = git("ls-files", "--debug", "model.safetensors", cwd=repo).stdout
    assert f"size: {len(v1)}" in debug
    status = git("-c", "filter.theta.process=false", "status", "--porcelain", cwd=repo)
    assert status.stdout == ""
    model.write_bytes(v1[:-1] + bytes([v1[-1] ^ 1]))  # and a real change is still seen
    assert git("status", "--porcelain", cwd=repo, check=False).stdout.strip()


@pytest.mark.usefixtures("always_direct")
def test_archive_gets_the_checkpoint_not_the_manifest(repo: Path, tmp_path: Path) -> None:
    _, v1 = _committed(repo, 10)
    tar = tmp_path / "out.tar"
    git("archive", "-o", str(tar), "HEAD", cwd=repo)
    with tarfile.open(tar) as t:
        member = t.extractfile("model.safetensors")
        assert member is not None
        assert member.read() == v1


@pytest.mark.usefixtures("always_direct")
def test_a_corrupt_object_fails_the_checkout_and_leaves_nothing(repo: Path) -> None:
    model, _ = _committed(repo, 11)
    objects = sorted(
        (repo / ".git" / "theta" / "objects").rglob("*"), key=lambda p: p.stat().st_size
    )
    victim = [p for p in objects if p.is_file()][-1]  # a tensor's object
    victim.chmod(0o644)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x40
    victim.write_bytes(bytes(data))
    model.unlink()
    proc = git("checkout", "--", "model.safetensors", cwd=repo, check=False)
    assert proc.returncode != 0
    assert "smudge filter theta failed" in proc.stderr
    assert "git theta fetch" in proc.stderr  # the one-line message names the fix
    assert not model.exists()
    assert list((repo / ".git" / "theta" / "tmp").glob("*theta-tmp")) == []


def test_threshold_picks_which_files_go_direct(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = _model(repo / "small.safetensors", 5, n=1, rows=16)  # 32 KiB
    big = _model(repo / "big.safetensors", 6, n=2, rows=256)  # 1 MiB
    git("add", ".", cwd=repo)
    git("commit", "-qm", "two", cwd=repo)
    monkeypatch.setenv("GIT_THETA_DIRECT_CHECKOUT", "100k")
    for p in ("small.safetensors", "big.safetensors"):
        (repo / p).unlink()
    git("checkout", "--", ".", cwd=repo)
    assert (repo / "small.safetensors").read_bytes() == small
    assert (repo / "big.safetensors").read_bytes() == big
    _clean(repo)


def test_interrupted_direct_checkout_is_finished_by_git_theta_checkout(repo: Path) -> None:
    model, v1 = _committed(repo, 7)
    model.unlink()
    # a checkout that left the manifest in place, as a skip-smudge checkout does
    git("checkout", "--", "model.safetensors", cwd=repo, env={"GIT_THETA_SKIP_SMUDGE": "1"})
    assert model.read_bytes().startswith(b"git-theta-manifest")
    out = theta("checkout", cwd=repo).stdout
    assert "checked out model.safetensors" in out
    assert model.read_bytes() == v1
    _clean(repo)


PEAK = """
import resource, subprocess, sys
r = subprocess.run(["git", "checkout", "--", "model.safetensors"], capture_output=True)
sys.stderr.write(r.stderr.decode())
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
sys.exit(r.returncode)
"""


def _checkout_peak(repo: Path, mode: str) -> int:
    (repo / "model.safetensors").unlink()
    # in-process (GIT_THETA_WARM=0): a warm worker is not a child, getrusage misses it
    env = {**os.environ, "GIT_THETA_DIRECT_CHECKOUT": mode, "GIT_THETA_WARM": "0"}
    res = subprocess.run(
        [sys.executable, "-c", PEAK], cwd=repo, capture_output=True, text=True, env=env
    )
    assert res.returncode == 0, res.stderr
    return int(res.stdout.strip())


def test_direct_checkout_bounds_memory(repo: Path) -> None:
    """git buffers a whole smudged file; the direct path stays within the design's bound of
    2 x the largest tensor + 300 MB, which this file (40 tensors of 8 MiB) exceeds."""
    model, expected = _committed(repo, 8, n=40, rows=4096)
    largest = 4096 * 512 * 4
    buffered = _checkout_peak(repo, "never")
    assert model.read_bytes() == expected
    direct = _checkout_peak(repo, "always")
    assert model.read_bytes() == expected
    _clean(repo)
    size = len(expected)
    bound = 2 * largest + 300_000_000
    assert size > bound
    assert buffered > size, "git should hold the whole file when it does the writing"
    assert direct < bound, (direct, bound)
