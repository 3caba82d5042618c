"""Progress on stderr when, and only when, stderr is a terminal: git runs under a real
pseudo-terminal here (the conftest turns progress off for every other test)."""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import threading
from pathlib import Path

from tests.conftest import git

NAME = "model.safetensors"


def run_on_terminal(repo: Path, *args: str) -> tuple[int, str]:
    """`git ARGS` with stdout and stderr on a pseudo-terminal; returns (exit code, output)."""
    env = {k: v for k, v in os.environ.items() if k != "GIT_THETA_NO_PROGRESS"}
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def pump() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO once the last writer closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=pump)
    reader.start()
    try:
        proc = subprocess.run(
            ["git", *args], cwd=repo, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave
        )
    finally:
        os.close(slave)
        reader.join(timeout=60)
        os.close(master)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


def progress_lines(output: str) -> list[str]:
    """The states the terminal showed: each `\\r\\x1b[K` redraws the line."""
    return [s.strip() for s in output.replace("\r\x1b[K", "\n").splitlines() if s.strip()]


def test_add_and_checkout_show_progress_on_a_terminal(repo: Path, minilm: Path) -> None:
    shutil.copyfile(minilm, repo / NAME)
    mb = f"{minilm.stat().st_size / 1e6:.0f}"
    rc, out = run_on_terminal(repo, "add", NAME)
    assert rc == 0, out
    lines = progress_lines(out)
    assert lines, "no progress shown on the terminal"
    assert all(line.startswith(f"git-theta: adding {NAME}: ") for line in lines), lines
    assert lines[-1] == f"git-theta: adding {NAME}: 100% ({mb} / {mb} MB)"
    assert out.endswith("\n")  # the terminal is left on a fresh line

    git("commit", "-qm", "minilm", cwd=repo)
    (repo / NAME).unlink()
    rc, out = run_on_terminal(repo, "checkout", "--", NAME)
    assert rc == 0, out
    lines = progress_lines(out)
    assert lines and lines[-1].startswith(f"git-theta: checking out {NAME}: 100% (")
    assert all(line.startswith(f"git-theta: checking out {NAME}: ") for line in lines), lines
    assert (repo / NAME).read_bytes() == minilm.read_bytes()


def test_nothing_is_printed_when_stderr_is_not_a_terminal(repo: Path, minilm: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GIT_THETA_NO_PROGRESS"}
    shutil.copyfile(minilm, repo / NAME)
    add = subprocess.run(["git", "add", NAME], cwd=repo, env=env, capture_output=True)
    assert add.returncode == 0
    assert add.stderr == b""
    git("commit", "-qm", "minilm", cwd=repo)
    (repo / NAME).unlink()
    co = subprocess.run(["git", "checkout", "--", NAME], cwd=repo, env=env, capture_output=True)
    assert co.returncode == 0
    assert co.stderr == b""
