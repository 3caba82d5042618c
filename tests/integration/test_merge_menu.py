"""The interactive merge menu, driven on a real pseudo-terminal that is git's controlling tty."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from tests.conftest import git

F = "m.safetensors"


class Terminal:
    """`git ARGS` in a new session whose controlling terminal is a pty we type into."""

    def __init__(self, repo: Path, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("GIT_THETA_NO_TTY", "CI")}
        env.pop("GIT_THETA_MERGE_STRATEGY", None)
        pid, fd = pty.fork()
        if pid == 0:  # child: pty.fork made the pty its controlling terminal
            os.chdir(repo)
            os.execvpe("git", ["git", *args], env)
        self.pid, self.fd = pid, fd
        self.seen = ""

    def expect(self, text: str, timeout: float = 60.0) -> str:
        """Everything read up to and including `text`; fails after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"did not see {text!r}; terminal shows:\n{self.seen}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"exited before {text!r}; terminal shows:\n{self.seen}")
                self.seen += chunk.decode(errors="replace")
        head, _, _ = self.seen.partition(text)
        self.seen = self.seen[len(head) + len(text) :]
        return head + text

    def type(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\n")

    def wait(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # keep draining so the child never blocks on a full terminal buffer
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                with contextlib.suppress(OSError):
                    self.seen += os.read(self.fd, 4096).decode(errors="replace")
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError(f"git did not finish; terminal shows:\n{self.seen}")


def f32(*v: float) -> np.ndarray:
    return np.array(v, dtype=np.float32)


def commit(repo: Path, tensors: dict[str, np.ndarray], msg: str) -> None:
    save_file(tensors, str(repo / F))
    git("add", F, cwd=repo)
    git("commit", "-qm", msg, cwd=repo)


@pytest.fixture
def conflicted(repo: Path) -> Path:
    """main and `theirs` changed a, b and c differently; base a = b = c = [0, 0]."""
    base = {"a": f32(0, 0), "b": f32(0, 0), "c": f32(0, 0)}
    commit(repo, base, "base")
    git("switch", "-qc", "theirs", cwd=repo)
    commit(repo, {"a": f32(4, 0), "b": f32(5, 5), "c": f32(7, 7)}, "theirs")
    git("switch", "-q", "main", cwd=repo)
    commit(repo, {"a": f32(0, 2), "b": f32(1, 1), "c": f32(3, 3)}, "ours")
    # a rule exists, but the terminal comes first; the rule is offered as the default
    (repo / ".thetamerge").write_text("c take-ours\n")
    return repo


def test_menu_on_the_controlling_terminal(conflicted: Path) -> None:
    repo = conflicted
    term = Terminal(repo, "merge", "--no-edit", "theirs")
    screen = term.expect("strategy> ")
    assert "3 parameter(s) changed differently on both sides" in screen
    assert "[1/3] a  F32[2]  (changed differently on both sides)" in screen
    # deltas [0, 2] and [4, 0]: norms 2 and 4, orthogonal
    assert "|d_ours|=2  |d_theirs|=4  cos(d_ours, d_theirs)=+0.000" in screen
    term.type("mean")
    assert "no git_theta.merges plugin named 'mean'" in term.expect("strategy> ")
    term.type("?")
    assert "task-arithmetic" in term.expect("strategy> ")
    term.type("average weights=1,3")
    screen = term.expect("strategy> ")
    assert "[2/3] b" in screen
    assert "cos(d_ours, d_theirs)=+1.000" in screen
    term.type("")  # no suggestion for b: asked again
    term.expect("strategy> ")
    term.type("task-arithmetic")
    screen = term.expect("strategy [take-ours]> ")
    assert "[3/3] c" in screen and "suggested by .thetamerge: take-ours" in screen
    term.type("")
    assert term.wait() == 0
    got = {k: v.tolist() for k, v in load_file(str(repo / F)).items()}
    assert got == {"a": [3, 0.5], "b": [6, 6], "c": [3, 3]}
    assert git("status", "--porcelain", cwd=repo).stdout == "?? .thetamerge\n"


def test_same_for_all_remaining(conflicted: Path) -> None:
    repo = conflicted
    term = Terminal(repo, "merge", "--no-edit", "theirs")
    term.expect("strategy> ")
    term.type("all take-theirs")
    assert term.wait() == 0
    got = {k: v.tolist() for k, v in load_file(str(repo / F)).items()}
    assert got == {"a": [4, 0], "b": [5, 5], "c": [7, 7]}


def test_abort_leaves_the_file_conflicted(conflicted: Path) -> None:
    repo = conflicted
    term = Terminal(repo, "merge", "--no-edit", "theirs")
    term.expect("strategy> ")
    term.type("take-ours")
    term.expect("strategy> ")
    term.type("abort")
    assert term.wait() != 0
    assert "merge aborted for 2 conflicting parameter(s): b, c" in term.seen
    assert git("ls-files", "-u", cwd=repo).stdout.count(F) == 3
