"""Shared checks for the reliability suite: is the store sound, make a model, kill a filter."""

from __future__ import annotations

import hashlib
import random
import subprocess
import time
from pathlib import Path

import numpy as np
import psutil
from safetensors.numpy import save_file

from git_theta import codec


def make_model(path: Path, *, seed: int, tensors: int = 16, rows: int = 512) -> None:
    """A float32 safetensors file of about tensors x rows x 1024 x 4 bytes."""
    rng = np.random.default_rng(seed)
    save_file(
        {
            f"layer{i}.weight": rng.normal(0, 0.02, size=(rows, 1024)).astype(np.float32)
            for i in range(tensors)
        },
        str(path),
    )


def assert_store_sound(repo: Path) -> int:
    """Every object in the store hashes to its name and decodes; returns how many there are."""
    objects = repo / ".git" / "theta" / "objects"
    n = 0
    for p in objects.rglob("*") if objects.exists() else []:
        if p.is_dir():
            continue
        data = p.read_bytes()
        assert hashlib.sha256(data).hexdigest() == p.name, f"partial or wrong object {p}"
        for _ in codec.Decoder(data) if data.startswith(codec.MAGIC) else []:
            pass
        n += 1
    return n


def filter_children(proc: psutil.Process) -> list[psutil.Process]:
    out = []
    try:
        for child in proc.children(recursive=True):
            try:
                cmd = " ".join(child.cmdline())
            except psutil.Error:
                continue
            if "git_theta" in cmd:
                out.append(child)
    except psutil.Error:
        pass
    return out


def run_and_kill(
    args: list[str], cwd: Path, delay: float, timeout: float = 120
) -> tuple[int, bool]:
    """Run git `args`; `delay` seconds after git-theta starts, SIGKILL it.

    Returns (git's exit code, whether a git-theta process was killed).
    """
    proc = subprocess.Popen(["git", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    killed = False
    deadline = time.monotonic() + timeout
    started: float | None = None
    while proc.poll() is None and time.monotonic() < deadline:
        kids = filter_children(ps)
        if kids and started is None:
            started = time.monotonic()
        if started is not None and time.monotonic() - started >= delay:
            for k in filter_children(ps):
                try:
                    k.kill()
                    killed = True
                except psutil.Error:
                    pass
            break
        time.sleep(0.002)
    proc.communicate(timeout=timeout)
    return proc.returncode, killed


def delays(seed: int, count: int, longest: float) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(0.0, longest) for _ in range(count)]
