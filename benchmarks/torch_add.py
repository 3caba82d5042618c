"""`git add` and checkout of the same tensors as torch.save, safetensors and .npz files.

Writes ~100 MB of float32 tensors (BERT-base-like shapes, random values) in each format,
then for each format, in a fresh repository with git-theta installed and the file tracked,
times `git add` and `rm file && git checkout -- file` (best and median of --runs runs).
torch.save files are read without importing torch (the filter process never imports it).
Run: .venv/bin/python benchmarks/torch_add.py [--mb 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def tensors(mb: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out: dict[str, np.ndarray] = {}
    total, i = 0, 0
    while total < mb << 20:
        for name, shape in (
            (f"encoder.layer.{i}.attention.self.query.weight", (768, 768)),
            (f"encoder.layer.{i}.attention.self.query.bias", (768,)),
            (f"encoder.layer.{i}.intermediate.dense.weight", (3072, 768)),
            (f"encoder.layer.{i}.output.dense.weight", (768, 3072)),
            (f"encoder.layer.{i}.output.LayerNorm.weight", (768,)),
        ):
            out[name] = rng.standard_normal(shape, dtype=np.float32) * 0.02
            total += out[name].nbytes
        i += 1
    return out


def write(fmt: str, path: Path, ts: dict[str, np.ndarray]) -> None:
    if fmt == "torch":
        import torch

        torch.save({k: torch.from_numpy(v) for k, v in ts.items()}, path)
    elif fmt == "safetensors":
        from safetensors.numpy import save_file

        save_file(ts, str(path))
    else:
        np.savez(path, **ts)


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def theta(*args: str, cwd: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "git_theta", *args], cwd=cwd, check=True, capture_output=True
    )


def one_run(src: Path, name: str, work: Path) -> tuple[float, float]:
    repo = Path(tempfile.mkdtemp(dir=work))
    git("init", "-q", cwd=repo)
    theta("install", "--local", cwd=repo)
    theta("track", "*.pt", "*.safetensors", "*.npz", cwd=repo)
    os.link(src, repo / name) if src.stat().st_dev == repo.stat().st_dev else None
    if not (repo / name).exists():
        (repo / name).write_bytes(src.read_bytes())
    t0 = time.perf_counter()
    git("add", name, cwd=repo)
    add = time.perf_counter() - t0
    git("commit", "-qm", "x", cwd=repo)
    (repo / name).unlink()
    t0 = time.perf_counter()
    git("checkout", "--", name, cwd=repo)
    checkout = time.perf_counter() - t0
    if (repo / name).read_bytes() != src.read_bytes():
        raise SystemExit(f"{name} did not come back byte-identical")
    return add, checkout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    env_home = tempfile.mkdtemp()
    os.environ.update(HOME=env_home, GIT_CONFIG_NOSYSTEM="1", GIT_THETA_NO_PROGRESS="1")
    os.environ["PYTHONPATH"] = str(ROOT)
    Path(env_home, ".gitconfig").write_text("[user]\n\tname = b\n\temail = b@b\n")
    ts = tensors(args.mb)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print(f"{len(ts)} float32 tensors, {sum(v.nbytes for v in ts.values()) / 1e6:.1f} MB")
        print("| format | file MB | git add best / median (s) | checkout best / median (s) |")
        print("|---|---|---|---|")
        for fmt, name in (("torch", "m.pt"), ("safetensors", "m.safetensors"), ("npz", "m.npz")):
            src = work / name
            write(fmt, src, ts)
            runs = [one_run(src, name, work) for _ in range(args.runs)]
            adds, outs = [r[0] for r in runs], [r[1] for r in runs]
            print(
                f"| {fmt} | {src.stat().st_size / 1e6:.1f} | {min(adds):.2f} / "
                f"{statistics.median(adds):.2f} | {min(outs):.2f} / {statistics.median(outs):.2f} |"
            )


if __name__ == "__main__":
    main()
