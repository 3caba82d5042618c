"""Push and clone through a real Git LFS server: git-theta versus Git LFS.

    .venv/bin/python benchmarks/bench_transfer.py [--large-mb 500] [--no-large]

Starts giftless on 127.0.0.1 (from .lfs-venv: `make lfs-server`), then for each checkpoint
(the real all-MiniLM-L6-v2, and a synthetic fp32 safetensors file of --large-mb MB):
commits it in a git-theta repository and in a Git LFS repository (Debian's git-lfs), times
`git push` and a fresh `git clone` (checkout included) against the same server, then
changes 10% of the parameters (tensors), commits, pushes again, and reports the bytes each
tool added to the server for that second version.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import minilm_path  # noqa: E402
from tests.lfs_server import LfsServer, start_server  # noqa: E402


def run(args: list[str], cwd: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr}")
    return time.perf_counter() - t0


def git(args: list[str], cwd: Path, env: dict[str, str]) -> float:
    return run(["git", *args], cwd, env)


def make_env(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Bench\n\temail = bench@example.com\n[init]\n\tdefaultBranch = main\n"
        "[lfs]\n\tlocksverify = false\n"
    )
    env = {
        **os.environ,
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "PYTHONPATH": str(ROOT),
        "GIT_THETA_NO_PROGRESS": "1",
    }
    run([sys.executable, "-m", "git_theta", "install"], home, env)
    git(["lfs", "install", "--skip-repo"], home, env)
    return env


def change_tenth(src: Path, dest: Path, seed: int) -> int:
    """Rewrite `src` with ~10% of its parameters (by bytes, whole tensors) changed."""
    tensors = load_file(str(src))
    total = sum(t.nbytes for t in tensors.values())
    rng = np.random.default_rng(seed)
    names = list(tensors)
    rng.shuffle(names)
    changed = 0
    for name in names:
        t = tensors[name]
        if changed + t.nbytes > 0.1 * total or not np.issubdtype(t.dtype, np.floating):
            continue
        noise = rng.standard_normal(t.shape).astype(t.dtype) * t.dtype.type(1e-3)
        tensors[name] = t + noise * (np.abs(t) + t.dtype.type(1e-3))
        changed += t.nbytes
    save_file(tensors, str(dest))
    return changed


def synthetic(path: Path, mb: int) -> None:
    rng = np.random.default_rng(0)
    n = max(10, mb // 8)
    per = mb * (1 << 20) // n // 4
    side = int(per**0.5)
    tensors = {
        f"layer{i:03d}.weight": (rng.standard_normal((side, side), dtype=np.float32) * 0.02)
        for i in range(n)
    }
    save_file(tensors, str(path))


def bench_tool(
    tool: str, ckpt: Path, work: Path, env: dict[str, str], server: LfsServer, name: str
) -> dict[str, float]:
    repo = work / f"{tool}-repo"
    repo.mkdir()
    git(["init", "-q"], repo, env)
    bare = work / f"{tool}-remote.git"
    git(["init", "-q", "--bare", str(bare)], work, env)
    git(["remote", "add", "origin", str(bare)], repo, env)
    git(["config", "remote.origin.lfsurl", server.endpoint(name)], repo, env)
    if tool == "git-theta":
        run([sys.executable, "-m", "git_theta", "install", "--local"], repo, env)
        run([sys.executable, "-m", "git_theta", "track", "*.safetensors"], repo, env)
    else:
        git(["lfs", "install", "--local"], repo, env)
        git(["lfs", "track", "*.safetensors"], repo, env)
    shutil.copyfile(ckpt, repo / "model.safetensors")
    out: dict[str, float] = {}
    out["add+commit s"] = git(["add", "."], repo, env) + git(["commit", "-qm", "v1"], repo, env)
    out["push s"] = git(["push", "-q", "origin", "main"], repo, env)
    out["v1 bytes"] = server.stored_bytes(name)
    clone = work / f"{tool}-clone"
    out["clone s"] = git(
        ["clone", "-q", "-c", f"lfs.url={server.endpoint(name)}", str(bare), str(clone)], work, env
    )
    if (clone / "model.safetensors").read_bytes() != ckpt.read_bytes():
        raise SystemExit(f"{tool}: the clone's checkpoint differs from the original")
    shutil.copyfile(work / "v2.safetensors", repo / "model.safetensors")
    git(["commit", "-qam", "v2"], repo, env)
    before = server.stored_bytes(name)
    out["v2 push s"] = git(["push", "-q", "origin", "main"], repo, env)
    out["v2 bytes"] = server.stored_bytes(name) - before
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--large-mb", type=int, default=500)
    ap.add_argument("--no-large", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-transfer-") as tmp:
        work = Path(tmp)
        server = start_server(work / "server")
        try:
            cases: list[tuple[str, Path]] = []
            m = minilm_path()
            if m is not None:
                cases.append(("MiniLM-L6 (fp32, 91 MB)", m))
            if not args.no_large:
                big = work / "large.safetensors"
                synthetic(big, args.large_mb)
                cases.append((f"synthetic fp32 ({big.stat().st_size / 1e6:.0f} MB)", big))
            rows = []
            for i, (label, ckpt) in enumerate(cases):
                case_dir = work / f"case{i}"
                case_dir.mkdir()
                changed = change_tenth(ckpt, case_dir / "v2.safetensors", seed=i)
                env = make_env(case_dir / "home")
                results = {}
                for tool in ("git-theta", "git-lfs"):
                    results[tool] = bench_tool(tool, ckpt, case_dir, env, server, f"c{i}-{tool}")
                rows.append((label, changed, results))
        finally:
            server.stop()
    print(
        "| checkpoint | tool | add+commit s | push s | clone s | v1 bytes on server "
        "| v2 (10% changed) push s | v2 bytes sent | v2 bytes vs Git LFS |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for label, _changed, results in rows:
        lfs_v2 = results["git-lfs"]["v2 bytes"]
        for tool, r in results.items():
            ratio = r["v2 bytes"] / lfs_v2 if lfs_v2 else float("nan")
            print(
                f"| {label} | {tool} | {r['add+commit s']:.2f} | {r['push s']:.2f} | "
                f"{r['clone s']:.2f} | {r['v1 bytes'] / 1e6:.1f} MB | {r['v2 push s']:.2f} | "
                f"{r['v2 bytes'] / 1e6:.1f} MB | {ratio:.3f}x |"
            )


if __name__ == "__main__":
    main()
