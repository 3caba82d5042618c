"""A full disk during add or checkout: a clear error, and the previous state intact.

The repository lives on a small tmpfs mounted in a private mount namespace (`unshare`), so
the test needs no cleanup and touches nothing outside. Root (CI) mounts directly; other
users get a user namespace with `unshare -r`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import hashlib, os, subprocess, sys
    from pathlib import Path
    import numpy as np
    from safetensors.numpy import save_file
    sys.path.insert(0, os.environ["THETA_ROOT"])
    from tests.reliability.helpers import assert_store_sound

    repo = Path(sys.argv[1])
    def git(*args, check=True):
        p = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
        if check and p.returncode:
            raise SystemExit(f"git {args} failed: {p.stderr}")
        return p
    def store_files():
        return sorted(str(p) for p in (repo / ".git/theta/objects").rglob("*") if p.is_file())

    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([sys.executable, "-m", "git_theta", "install", "--local"], cwd=repo, check=True,
                   capture_output=True)
    subprocess.run([sys.executable, "-m", "git_theta", "track", "*.safetensors"], cwd=repo,
                   check=True, capture_output=True)
    rng = np.random.default_rng(0)
    small = {f"w{i}": rng.normal(0, 0.02, (256, 1024)).astype(np.float32) for i in range(4)}
    save_file(small, str(repo / "model.safetensors"))
    git("add", ".")
    git("commit", "-qm", "base")
    v1 = (repo / "model.safetensors").read_bytes()

    # a second version whose objects cannot fit: random bytes do not compress
    big = {f"w{i}": rng.integers(0, 2**31, (1024, 1024), dtype=np.int32) for i in range(3)}
    save_file(big, str(repo / "model.safetensors"))
    index_before, store_before = git("ls-files", "-s").stdout, store_files()
    res = git("add", "model.safetensors", check=False)
    assert res.returncode != 0, "add on a full disk must fail"
    assert "No space left on device" in res.stderr, res.stderr
    assert "git-theta: error:" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert git("ls-files", "-s").stdout == index_before, "index changed"
    assert store_files() == store_before, "store changed"
    assert_store_sound(repo)

    # free the space: the previous version checks out exactly
    (repo / "model.safetensors").unlink()
    git("checkout", "--", "model.safetensors")
    assert (repo / "model.safetensors").read_bytes() == v1

    # checkout on a full disk: fill it, then ask for the file back
    (repo / "model.safetensors").unlink()
    filler = repo.parent / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"x" * (1 << 20))
                f.flush()
        except OSError:
            pass
    res = git("checkout", "--", "model.safetensors", check=False)
    assert res.returncode != 0, "checkout on a full disk must fail"
    assert_store_sound(repo)
    filler.unlink()
    git("checkout", "--", "model.safetensors")
    assert (repo / "model.safetensors").read_bytes() == v1
    assert git("status", "--porcelain").stdout == ""
    print("DISK-FULL-OK")
    """
)


def _unshare_prefix() -> list[str]:
    if shutil.which("unshare") is None:
        pytest.fail("`unshare` (util-linux) is needed for the disk-full test")
    return ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "-r", "--mount"]


def test_full_disk_during_add_and_checkout(tmp_path: Path) -> None:
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    script = tmp_path / "scenario.py"
    script.write_text(SCRIPT)
    shell = f"mount -t tmpfs -o size=24m tmpfs {mnt} && {sys.executable} {script} {mnt}/repo"
    env = {**os.environ, "THETA_ROOT": str(ROOT)}
    res = subprocess.run(
        [*_unshare_prefix(), "sh", "-c", shell],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0 and "DISK-FULL-OK" in res.stdout, res.stdout + res.stderr
