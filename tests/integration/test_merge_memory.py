"""Peak memory of a real `git merge` whose one conflicting parameter is large."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from tests.conftest import git

F = "m.safetensors"
N = 16 << 20  # one 64 MiB float32 tensor: 128 MiB as float64, three sides of it 384 MiB

# the peak of every process the merge runs (git, the driver, the checkout's filter): for
# RUSAGE_CHILDREN the kernel keeps the largest resident set of any reaped descendant
PEAK = """
import resource, subprocess, sys
r = subprocess.run(
    ["git", "-c", "theta.merge.strategy=average", "merge", "-q", "-m", "merge", "theirs"],
    capture_output=True,
)
sys.stderr.write(r.stderr.decode())
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
sys.exit(r.returncode)
"""


@pytest.fixture(autouse=True)
def no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_THETA_NO_TTY", "1")
    # filters in-process: a warm worker is not a child, so getrusage would not count it
    monkeypatch.setenv("GIT_THETA_WARM", "0")
    monkeypatch.delenv("GIT_THETA_MERGE_STRATEGY", raising=False)


def _commit(repo: Path, tensors: dict[str, np.ndarray], msg: str) -> None:
    save_file(tensors, str(repo / F))
    git("add", F, cwd=repo)
    git("commit", "-qm", msg, cwd=repo)


def test_merging_a_large_conflicting_tensor_stays_within_the_bound(repo: Path) -> None:
    """The design's bound is 2 x the largest tensor + 300 MB (434 MB here); the whole-value
    merge, holding base, ours, theirs and the result as float64 (and the raw bytes), peaked
    at about 860 MB on this file."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal(N, dtype=np.float32)
    small = rng.standard_normal(1000, dtype=np.float32)
    ours, theirs = base + np.float32(1), base * np.float32(0.5)
    _commit(repo, {"big": base, "small": small}, "base")
    git("switch", "-qc", "theirs", cwd=repo)
    _commit(repo, {"big": theirs, "small": small}, "theirs")
    git("switch", "-q", "main", cwd=repo)
    _commit(repo, {"big": ours, "small": small + 1}, "ours")
    expected = ((ours.astype(np.float64) + theirs.astype(np.float64)) / 2).astype(np.float32)
    del base

    res = subprocess.run(
        [sys.executable, "-c", PEAK], cwd=repo, capture_output=True, text=True, env=os.environ
    )
    assert res.returncode == 0, res.stderr
    peak = int(res.stdout.strip())

    merged = load_file(str(repo / F))
    np.testing.assert_array_equal(merged["big"], expected)
    np.testing.assert_array_equal(merged["small"], small + 1)
    assert git("status", "--porcelain", cwd=repo).stdout == ""
    largest = N * 4
    bound = 2 * largest + 300_000_000
    assert peak < bound, f"git merge peaked at {peak / 1e6:.0f} MB, bound {bound / 1e6:.0f} MB"
