"""`make demo` runs demo/quickstart.py: it must finish on its own and say what it checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, git


def test_quickstart_demo_runs_and_round_trips(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "demo" / "quickstart.py"), "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    repo = tmp_path / "repo"
    assert f"demo repository: {repo}" in out
    assert "$ git theta install --local" in out
    assert "$ git theta track '*.safetensors'" in out
    assert out.count("byte-identical yes, every tensor equal yes") == 4
    assert "restored byte-identical: yes" in out
    assert "git status: clean" in out
    assert "demo finished" in out
    # the summary table has one row per commit
    table = out.split("==> What each commit stored", 1)[1].splitlines()
    assert table[1].split()[:3] == ["commit", "file", "size"]
    assert table[2].split()[0] == "base" and table[3].split()[0] == "fine-tune"
    # the repository is left for the user to look at, with both commits and a manifest in git
    log = git("log", "--format=%s", cwd=repo).stdout.split()
    assert log == ["fine-tune", "base"]
    blob = git("cat-file", "-p", "HEAD:model.safetensors", cwd=repo).stdout
    assert blob.startswith("git-theta-manifest 1\nformat safetensors\n")
    # the fine-tune changed 3 tensors, so its manifest differs from the base in 3 lines
    diff = git("diff", "--numstat", "base", "fine-tune", cwd=repo).stdout.split()
    assert diff[:2] == ["3", "3"]
