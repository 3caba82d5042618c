"""Cleaning a changed large parameter stays within the design's memory bound for add."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from tests.conftest import git

ROWS, COLS = 6144, 4096  # 96 MiB of float32: the largest tensor

PEAK = """
import resource, subprocess, sys
r = subprocess.run(["git", "commit", "-qam", "fine-tune"], capture_output=True)
sys.stderr.write(r.stderr.decode())
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
sys.exit(r.returncode)
"""


def _commit_peak(repo: Path) -> int:
    """Peak resident memory of any process under a fresh `git commit -a` (VmHWM). The filter
    runs in-process (GIT_THETA_WARM=0): a warm worker is not a child, so is not counted."""
    res = subprocess.run(
        [sys.executable, "-c", PEAK],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, "GIT_THETA_WARM": "0"},
    )
    assert res.returncode == 0, res.stderr
    return int(res.stdout.strip())


def test_clean_of_a_changed_large_tensor_bounds_memory(repo: Path) -> None:
    """A fine-tune-like change of every element of a 96 MiB tensor is stored against its
    base (delta) within 2 x the largest tensor + 300 MB; building whole-tensor candidates
    (base, XOR array, change positions, encodings) at once needed ~4-5 copies of it."""
    rng = np.random.default_rng(3)
    big = rng.normal(0, 0.02, (ROWS, COLS)).astype(np.float32)
    small = rng.normal(0, 0.02, (512, 512)).astype(np.float32)
    model = repo / "model.safetensors"
    save_file({"big": big, "small": small}, str(model))
    git("add", "model.safetensors", cwd=repo)
    git("commit", "-qm", "base", cwd=repo)
    big *= 1 + rng.normal(0, 1e-3, big.shape).astype(np.float32)
    small += 1e-3
    save_file({"big": big, "small": small}, str(model))
    expected = model.read_bytes()
    del big, small
    peak = _commit_peak(repo)
    text = git("show", "HEAD:model.safetensors", cwd=repo).stdout
    big_line = next(line for line in text.splitlines() if '"name":"big"' in line)
    assert '"type":"delta"' in big_line, big_line
    model.unlink()
    git("checkout", "--", "model.safetensors", cwd=repo)
    assert model.read_bytes() == expected
    bound = 2 * ROWS * COLS * 4 + 300_000_000
    assert peak < bound, (peak, bound)
