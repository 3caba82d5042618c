"""The merge benchmark runs end to end (one seed, short training) and prints its table."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_bench_merge_prints_a_row_per_model() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_merge.py"),
            "--seeds",
            "1",
            "--epochs",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")][1:]
    names = [r.split("|")[1].strip() for r in rows]
    assert names == [
        "base",
        "fine-tune A (0-4)",
        "fine-tune B (5-9)",
        "git merge, average",
        "git merge, fisher",
        "git merge, task-arithmetic",
        "git merge, ties density=0.5",
    ]
    for r in rows:
        for cell in r.split("|")[2:5]:
            mean = float(cell.split("±")[0])
            assert 0.0 <= mean <= 1.0
    # the merges really happened: averaging and Fisher weighting give different models
    assert rows[3].split("|")[2:5] != rows[4].split("|")[2:5]
