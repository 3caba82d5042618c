"""SIGKILL git-theta at random points of `git add` and `git checkout`: nothing is lost.

After every kill the store holds only whole, correct objects, and re-running the command
completes the work with the exact bytes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.conftest import git, theta
from tests.reliability.helpers import assert_store_sound, delays, make_model, run_and_kill

# more for the long runs: GIT_THETA_KILLS=50 pytest tests/reliability (docs/reliability.md)
KILLS = int(os.environ.get("GIT_THETA_KILLS", "6"))


def _timed(args: list[str], cwd: Path) -> float:
    t = time.monotonic()
    git(*args, cwd=cwd)
    return time.monotonic() - t


def test_kill_during_add_loses_nothing(repo: Path, tmp_path: Path) -> None:
    model = repo / "model.safetensors"
    make_model(tmp_path / "probe.safetensors", seed=99)
    (repo / "probe.safetensors").write_bytes((tmp_path / "probe.safetensors").read_bytes())
    longest = _timed(["add", "probe.safetensors"], repo)  # how long an add of this size takes
    git("reset", "-q", "probe.safetensors", cwd=repo)
    (repo / "probe.safetensors").unlink()
    killed = 0
    for i, delay in enumerate(delays(1, KILLS, longest)):
        make_model(model, seed=i)
        index_before = git("ls-files", "-s", cwd=repo).stdout
        code, was_killed = run_and_kill(["add", "model.safetensors"], repo, delay)
        killed += was_killed
        assert_store_sound(repo)
        if code != 0:
            # a failed add leaves the index as it was
            assert git("ls-files", "-s", cwd=repo).stdout == index_before
        git("add", "model.safetensors", cwd=repo)  # the rerun completes
        git("commit", "-qm", f"v{i}", cwd=repo)
        expected = model.read_bytes()
        model.unlink()
        git("checkout", "--", "model.safetensors", cwd=repo)
        assert model.read_bytes() == expected
    assert killed >= KILLS // 2, "the kills should mostly land while git-theta runs"


def _committed(repo: Path, seed: int) -> tuple[Path, bytes, float]:
    """A committed model (checked out again); its bytes and how long a checkout of it takes."""
    model = repo / "model.safetensors"
    make_model(model, seed=seed)
    expected = model.read_bytes()
    git("add", "model.safetensors", cwd=repo)
    git("commit", "-qm", "base", cwd=repo)
    # the faster of two checkouts: the first can be slowed by cold caches, and kill delays
    # drawn up to a slow one would mostly land after later (faster) checkouts had finished
    times = []
    for _ in range(2):
        model.unlink()
        times.append(_timed(["checkout", "--", "model.safetensors"], repo))
    return model, expected, min(times)


def test_kill_during_checkout_loses_nothing(repo: Path) -> None:
    model, expected, longest = _committed(repo, seed=7)
    killed = 0
    for delay in delays(2, KILLS, longest):
        model.unlink()
        _code, was_killed = run_and_kill(["checkout", "--", "model.safetensors"], repo, delay)
        killed += was_killed
        assert_store_sound(repo)
        git("checkout", "--", "model.safetensors", cwd=repo)
        assert model.read_bytes() == expected
        assert git("status", "--porcelain", cwd=repo).stdout == ""
    assert killed >= KILLS // 2


def test_kill_during_direct_checkout_loses_nothing(repo: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The direct path writes a temp file and renames it: a kill leaves the manifest, the
    whole checkpoint or (between deleting the manifest and the rename) no file, never a
    partial one. git then takes the manifest file as up to date
    (its stat data is in the index), so `git theta checkout` is what finishes the work."""
    monkeypatch.setenv("GIT_THETA_DIRECT_CHECKOUT", "always")
    model, expected, longest = _committed(repo, seed=8)
    killed = 0
    for delay in delays(3, KILLS, longest):
        model.unlink()
        _code, was_killed = run_and_kill(["checkout", "--", "model.safetensors"], repo, delay)
        killed += was_killed
        assert_store_sound(repo)
        content = model.read_bytes() if model.exists() else b""
        assert content == expected or content.startswith(b"git-theta-manifest") or not content
        assert not [p for p in repo.iterdir() if p.name.endswith(".theta-tmp")]
        if not model.exists():
            git("checkout", "--", "model.safetensors", cwd=repo)
        theta("checkout", cwd=repo)
        assert model.read_bytes() == expected
        assert git("status", "--porcelain", cwd=repo).stdout == ""
    assert killed >= KILLS // 2
