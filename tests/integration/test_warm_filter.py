"""git's filter handed to a warm worker (warm_client.py / warm_server.py), through real git.

Each test has its own server directory (XDG_RUNTIME_DIR), so it sees only the servers its
own git commands started, and stops them at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from safetensors.numpy import load_file, save_file

from git_theta import warm_client, warm_server
from tests.conftest import git, stop_warm_servers, store_objects, theta
from tests.reliability.helpers import make_model

FILE = "model.safetensors"


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="gtw-"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(path))
    yield path
    stop_warm_servers(str(path))
    wait_for(lambda: not list(path.glob("git-theta/*.sock")), "servers to stop")


def wait_for(cond: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def server() -> dict[str, Any]:
    """The one server of this test, once it listens."""
    servers = wait_for(warm_server.status, "a warm server to listen")
    assert len(servers) == 1, servers
    return dict(servers[0])


def workers(pid: int) -> list[psutil.Process]:
    try:
        return list(psutil.Process(pid).children())
    except psutil.Error:
        return []


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def commit_model(repo: Path, src: Path | None = None, seed: int = 0) -> bytes:
    if src is not None:
        (repo / FILE).write_bytes(src.read_bytes())
    else:
        make_model(repo / FILE, seed=seed, tensors=8, rows=64)
    git("add", FILE, cwd=repo)
    git("commit", "-qm", "model", cwd=repo)
    return (repo / FILE).read_bytes()


def test_add_and_checkout_are_served_by_a_warm_worker(
    repo: Path, runtime: Path, minilm: Path
) -> None:
    first = commit_model(repo, minilm)  # cold: starts the server
    before = server()
    # a 10%-style change: one tensor moved, the rest as committed
    tensors = load_file(str(repo / FILE))
    name = max(tensors, key=lambda n: tensors[n].size)
    tensors[name] = tensors[name] * np.float32(1.001)
    save_file(tensors, str(repo / FILE), metadata={"format": "pt"})
    second = (repo / FILE).read_bytes()
    git("add", FILE, cwd=repo)
    git("commit", "-qm", "one tensor changed", cwd=repo)
    (repo / FILE).unlink()
    git("checkout", "--", FILE, cwd=repo)
    assert (repo / FILE).read_bytes() == second
    git("checkout", "-q", "HEAD~1", "--", FILE, cwd=repo)
    assert (repo / FILE).read_bytes() == first
    after = server()
    assert after["pid"] == before["pid"]
    assert after["served"] >= before["served"] + 3
    # each worker's cost, from wait4: it rebuilt or hashed a 91 MB file
    assert after["finished"] >= before["finished"] + 2
    costs = after["recent"][-2:]
    assert all(c["cpu"] > 0.01 and c["rss"] > 30e6 for c in costs), costs
    git("checkout", "-q", "HEAD", "--", FILE, cwd=repo)
    assert git("status", "--porcelain", cwd=repo).stdout == ""


def test_each_worker_takes_its_own_commands_environment(repo: Path, runtime: Path) -> None:
    data = commit_model(repo)
    pid = server()["pid"]
    (repo / FILE).unlink()
    # the server was started without GIT_THETA_SKIP_SMUDGE: the worker must see the front's
    git("checkout", "--", FILE, cwd=repo, env={"GIT_THETA_SKIP_SMUDGE": "1"})
    assert (repo / FILE).read_bytes().startswith(b"git-theta-manifest")
    (repo / FILE).unlink()
    git("checkout", "--", FILE, cwd=repo)
    assert (repo / FILE).read_bytes() == data
    assert server()["pid"] == pid


def test_commands_in_two_repositories_at_once(tmp_path: Path, runtime: Path) -> None:
    repos = []
    for name in ("a", "b"):
        r = tmp_path / name
        r.mkdir()
        git("init", "-q", cwd=r)
        theta("install", "--local", cwd=r)
        theta("track", "*.safetensors", cwd=r)
        repos.append(r)
    commit_model(repos[0], seed=1)
    server()
    for i, r in enumerate(repos):
        make_model(r / FILE, seed=10 + i, tensors=8, rows=256)
    want = [(r / FILE).read_bytes() for r in repos]
    adds = [subprocess.Popen(["git", "add", FILE], cwd=r) for r in repos]
    assert [p.wait(60) for p in adds] == [0, 0]
    for r in repos:
        git("commit", "-qm", "v", cwd=r)
        (r / FILE).unlink()
    checkouts = [subprocess.Popen(["git", "checkout", "--", FILE], cwd=r) for r in repos]
    assert [p.wait(60) for p in checkouts] == [0, 0]
    assert [(r / FILE).read_bytes() for r in repos] == want


def test_an_error_in_a_worker_fails_the_command_with_its_message(repo: Path, runtime: Path) -> None:
    commit_model(repo)
    before = server()["served"]
    for p in (repo / ".git" / "theta" / "objects").rglob("*"):
        if p.is_file() and p.stat().st_size > 1000:
            p.chmod(0o644)
            p.write_bytes(b"\0" * p.stat().st_size)
            break
    (repo / FILE).unlink()
    proc = git("checkout", "--", FILE, cwd=repo, check=False)
    assert proc.returncode != 0
    assert "git-theta: error:" in proc.stderr and FILE in proc.stderr
    assert not (repo / FILE).exists()
    assert server()["served"] > before


def test_killing_the_front_ends_its_worker(repo: Path, runtime: Path) -> None:
    """A front started as git would, whose git never speaks: its worker waits on the pipe
    for ever, unless killing the front ends it (as killing the filter it stands for would)."""
    commit_model(repo)
    pid = server()["pid"]
    earlier = {p.pid for p in workers(pid)}  # those of the commit, maybe still ending
    front = subprocess.Popen(
        [sys.executable, "-m", "git_theta", "filter-process"],
        cwd=repo,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        worker = wait_for(
            lambda: [p for p in workers(pid) if p.pid not in earlier], "a worker for the front"
        )[0]
        time.sleep(0.3)
        assert worker.is_running() and front.poll() is None  # both wait on our silent pipe
        front.send_signal(signal.SIGKILL)
        front.wait(10)
        wait_for(lambda: gone(worker.pid), "the worker to end with its front", timeout=10)
    finally:
        front.kill()
        front.wait(10)
    # the server goes on serving
    data = commit_model(repo, seed=9)
    (repo / FILE).unlink()
    git("checkout", "--", FILE, cwd=repo)
    assert (repo / FILE).read_bytes() == data
    assert server()["pid"] == pid


def test_a_dead_servers_socket_is_replaced(repo: Path, runtime: Path) -> None:
    commit_model(repo)
    old = server()
    os.kill(old["pid"], signal.SIGKILL)
    wait_for(lambda: gone(old["pid"]), "the server to die")
    assert Path(old["socket"]).exists()  # left behind: nothing listens on it
    data = commit_model(repo, seed=5)  # served in-process; starts a new server
    new = server()
    assert new["pid"] != old["pid"] and new["socket"] == old["socket"]
    (repo / FILE).unlink()
    git("checkout", "--", FILE, cwd=repo)
    assert (repo / FILE).read_bytes() == data
    assert server()["served"] >= 1


@pytest.mark.parametrize("how", ["env", "install --cold"])
def test_warm_server_can_be_turned_off(
    repo: Path, runtime: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    if how == "env":
        monkeypatch.setenv(warm_client.ENV_SWITCH, "0")
    else:
        theta("install", "--local", "--cold", cwd=repo)
        config = git("config", "filter.theta.process", cwd=repo).stdout
        assert config.strip().endswith("filter-process --cold")
    data = commit_model(repo)
    (repo / FILE).unlink()
    git("checkout", "--", FILE, cwd=repo)
    assert (repo / FILE).read_bytes() == data
    time.sleep(1.0)  # a server started by mistake would be listening by now
    assert not list(runtime.glob("git-theta/*.sock"))
    assert warm_server.status() == []


def test_a_directory_others_can_open_is_not_used(repo: Path, runtime: Path) -> None:
    shared = runtime / "git-theta"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    data = commit_model(repo)
    (repo / FILE).unlink()
    git("checkout", "--", FILE, cwd=repo)
    assert (repo / FILE).read_bytes() == data
    time.sleep(1.0)
    assert list(shared.iterdir()) == []
    assert (shared.stat().st_mode & 0o777) == 0o755


def test_a_server_exits_when_idle_and_after_stop(
    repo: Path, runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit_model(repo)
    first = server()
    out = theta("warm", "status", cwd=repo).stdout
    assert f"pid {first['pid']}:" in out
    assert "stopped 1 warm server(s)" in theta("warm", "stop", cwd=repo).stdout
    wait_for(lambda: gone(first["pid"]), "the stopped server to exit")
    wait_for(lambda: not list(runtime.glob("git-theta/*.sock")), "the socket to go")
    assert "no warm server is running" in theta("warm", "status", cwd=repo).stdout
    # one started with a one-second idle limit goes by itself
    monkeypatch.setenv("GIT_THETA_WARM_IDLE", "1")
    commit_model(repo, seed=7)
    wait_for(lambda: list(runtime.glob("git-theta/*.sock")), "a new server")
    wait_for(lambda: not list(runtime.glob("git-theta/*.sock")), "the idle server to exit")
    assert store_objects(repo)
    # a global uninstall stops this user's servers too
    monkeypatch.delenv("GIT_THETA_WARM_IDLE")
    commit_model(repo, seed=8)
    server()
    out = theta("uninstall", "--global", cwd=repo).stdout
    assert "the warm filter server" in out
    wait_for(lambda: not warm_server.status(), "the server to stop on uninstall")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="-P is Python 3.11+")
@pytest.mark.parametrize("warm", ["1", "0"])
def test_a_repositorys_own_modules_never_run(
    repo: Path, runtime: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warm: str
) -> None:
    """git runs filters in the repository's top directory; a cloned repository's
    `numpy.py` or `git_theta/` must not be imported in place of ours (install uses -P)."""
    monkeypatch.setenv(warm_client.ENV_SWITCH, warm)
    marker = tmp_path / "repository-code-ran"
    payload = f"open({str(marker)!r}, 'w').close()\nraise SystemExit(3)\n"
    for name in ("numpy.py", "zstandard.py", "blake3.py", "safetensors.py"):
        (repo / name).write_text(payload)
    (repo / "git_theta").mkdir()
    (repo / "git_theta" / "__init__.py").write_text(payload)
    (repo / "git_theta" / "__main__.py").write_text(payload)
    data = commit_model(repo)
    (repo / FILE).unlink()
    git("checkout", "--", FILE, cwd=repo)
    assert (repo / FILE).read_bytes() == data
    assert not marker.exists()
