"""Helpers shared by the transfer integration tests: models, remotes, fresh clones."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from tests.conftest import git
from tests.lfs_server import LfsServer


def write_model(path: Path, seed: int, n: int = 6, size: int = 48) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    tensors = {
        f"layer{i}.weight": rng.standard_normal((size, size)).astype(np.float32) for i in range(n)
    }
    tensors["bias"] = rng.standard_normal(size).astype(np.float32)
    save_file(tensors, str(path))
    return tensors


def repo_name() -> str:
    return "r" + uuid.uuid4().hex[:12]


def bare_remote(tmp_path: Path, name: str = "remote.git") -> Path:
    bare = tmp_path / name
    git("init", "-q", "--bare", str(bare), cwd=tmp_path)
    return bare


def fresh_home(tmp_path: Path, name: str = "home2") -> dict[str, str]:
    """An environment with a new HOME where git-theta is installed globally (as a user would)."""
    home = tmp_path / name
    home.mkdir()
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Other\n\temail = other@example.com\n"
        "[init]\n\tdefaultBranch = main\n"
        "[advice]\n\tdetachedHead = false\n"
    )
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    run_theta(["install"], cwd=home, env=env)
    return env


def run_theta(
    args: list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "git_theta", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        input=input,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"git theta {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_git(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def store_of(repo: Path) -> set[str]:
    git_dir = (
        repo if (repo / "objects").is_dir() and not (repo / ".git").exists() else repo / ".git"
    )
    objects = git_dir / "theta" / "objects"
    return {p.name for p in objects.rglob("*") if p.is_file()} if objects.exists() else set()


def lfs_remote(repo: Path, tmp_path: Path, lfs_server: LfsServer) -> tuple[Path, str]:
    """A bare `origin` for `repo` whose Git LFS endpoint is a fresh repo on `lfs_server`."""
    name = repo_name()
    bare = bare_remote(tmp_path)
    git("remote", "add", "origin", str(bare), cwd=repo)
    git("config", "remote.origin.lfsurl", lfs_server.endpoint(name), cwd=repo)
    return bare, name
