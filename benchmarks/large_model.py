"""Long run: a checkpoint larger than half the machine's memory through add, checkout, merge.

Generates a Llama-7B-shaped bf16 safetensors file (~13.5 GB in 291 tensors) on disk, tensor
by tensor, then measures wall time and peak memory (largest single process, and the whole
process tree sampled every 50 ms) of:
  git add + commit, checkout (file removed), and a merge of two branches that changed
  different layers plus one conflicting tensor (resolved by `average`), when the merge driver
  is installed. Run: python benchmarks/large_model.py --workdir /path/with/60GB/free
Results are printed as a markdown table; docs/reliability.md quotes them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]


def llama_shapes(layers: int = 32, dim: int = 4096, ffn: int = 11008, vocab: int = 32000):
    shapes = {"model.embed_tokens.weight": (vocab, dim)}
    for i in range(layers):
        p = f"model.layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[p + f"self_attn.{n}.weight"] = (dim, dim)
        shapes[p + "mlp.gate_proj.weight"] = (ffn, dim)
        shapes[p + "mlp.up_proj.weight"] = (ffn, dim)
        shapes[p + "mlp.down_proj.weight"] = (dim, ffn)
        shapes[p + "input_layernorm.weight"] = (dim,)
        shapes[p + "post_attention_layernorm.weight"] = (dim,)
    shapes["model.norm.weight"] = (dim,)
    shapes["lm_head.weight"] = (vocab, dim)
    return shapes


def bf16(values: np.ndarray) -> bytes:
    return (values.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()


def write_checkpoint(
    path: Path, shapes: dict, seed: int, changed: set[str] | None = None, base: Path | None = None
) -> None:
    """Stream a bf16 safetensors file; with `base`, copy unchanged tensors from it."""
    header: dict = {}
    offset = 0
    for name, shape in shapes.items():
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    rng = np.random.default_rng(seed)
    src = open(base, "rb") if base else None  # noqa: SIM115
    base_start = 8 + struct.unpack("<Q", src.read(8))[0] if src else 0
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb)
        for name, shape in shapes.items():
            start, end = header[name]["data_offsets"]
            if src is not None and name not in (changed or set()):
                src.seek(base_start + start)
                left = end - start
                while left:
                    chunk = src.read(min(left, 64 << 20))
                    f.write(chunk)
                    left -= len(chunk)
                continue
            rows = shape[0]
            step = max(1, (16 << 20) // (2 * int(np.prod(shape[1:]) or 1)))
            for r in range(0, rows, step):
                part = (min(step, rows - r), *shape[1:])
                f.write(bf16(rng.normal(0, 0.02, size=part)))
    if src:
        src.close()


def overwrite(path: Path, names: list[str], seed: int) -> None:
    """Give `names` new random bf16 values in place (no copy of a 13 GB file)."""
    with open(path, "r+b") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        rng = np.random.default_rng(seed)
        for name in names:
            start, end = header[name]["data_offsets"]
            shape = header[name]["shape"]
            f.seek(8 + n + start)
            row = 2 * int(np.prod(shape[1:]) or 1)
            step = max(1, (16 << 20) // row)
            for r in range(0, shape[0], step):
                part = (min(step, shape[0] - r), *shape[1:])
                f.write(bf16(rng.normal(0, 0.02, size=part)))
            assert f.tell() == 8 + n + end


class Peak:
    """Largest RSS of one process and of the whole tree under `pid`, sampled."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.single = 0
        self.tree = 0
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self) -> None:
        while not self.stop:
            try:
                procs = [self.root, *self.root.children(recursive=True)]
                rss = []
                for p in procs:
                    with contextlib.suppress(psutil.Error):
                        rss.append(p.memory_info().rss)
                self.single = max(self.single, *rss) if rss else self.single
                self.tree = max(self.tree, sum(rss))
            except psutil.Error:
                pass
            time.sleep(0.05)


def measure(cmd: list[str], cwd: Path, env: dict) -> tuple[float, int, int]:
    t = time.monotonic()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = Peak(p.pid)
    _out, err = p.communicate()
    peak.stop = True
    elapsed = time.monotonic() - t
    if p.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err.decode()}")
    return elapsed, peak.single, peak.tree


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--layers", type=int, default=32, help="32 gives ~13.5 GB")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="theta-large-", dir=args.workdir))
    home = work / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(
        "[user]\n\tname = b\n\temail = b@b\n[init]\n\tdefaultBranch = main\n"
    )
    env = {
        **os.environ,
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "PYTHONPATH": str(ROOT),
        "GIT_THETA_NO_PROGRESS": "1",
        # filters in git's process tree, where the sampler sees them (a warm worker is a
        # child of the warm server); start-up is nothing next to a 13.5 GB file
        "GIT_THETA_WARM": "0",
    }
    repo = work / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True, env=env)
    theta = [sys.executable, "-m", "git_theta"]
    subprocess.run(
        [*theta, "install", "--local"], cwd=repo, env=env, check=True, capture_output=True
    )
    subprocess.run(
        [*theta, "track", "*.safetensors"], cwd=repo, env=env, check=True, capture_output=True
    )
    shapes = llama_shapes(layers=args.layers)
    largest = max(int(np.prod(s)) * 2 for s in shapes.values())
    model = repo / "model.safetensors"
    t = time.monotonic()
    write_checkpoint(model, shapes, seed=0)
    size = model.stat().st_size
    print(
        f"generated {size / 1e9:.2f} GB in {len(shapes)} tensors ({time.monotonic() - t:.0f} s); "
        f"largest tensor {largest / 1e6:.0f} MB; bound = 2 x largest + 300 MB = "
        f"{(2 * largest + 300e6) / 1e6:.0f} MB",
        flush=True,
    )
    rows = []

    def step(label: str, cmd: list[str]) -> None:
        elapsed, single, tree = measure(cmd, repo, env)
        rows.append((label, elapsed, single, tree))
        print(
            f"{label}: {elapsed:.1f} s, peak process {single / 1e6:.0f} MB, "
            f"tree {tree / 1e6:.0f} MB",
            flush=True,
        )

    subprocess.run(["git", "add", ".gitattributes"], cwd=repo, env=env, check=True)
    step("git add (first version)", ["git", "add", "model.safetensors"])
    subprocess.run(["git", "commit", "-qm", "base"], cwd=repo, env=env, check=True)
    digest = subprocess.run(
        ["sha256sum", str(model)], capture_output=True, text=True
    ).stdout.split()[0]
    model.unlink()
    step("git checkout -- model (file removed)", ["git", "checkout", "--", "model.safetensors"])
    same = subprocess.run(["sha256sum", str(model)], capture_output=True, text=True).stdout.split()[
        0
    ]
    print("checkout byte-identical:", same == digest, flush=True)
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=repo, env=env, capture_output=True, text=True
    ).stdout
    print("status clean:", status == "", flush=True)

    has_driver = (
        subprocess.run(
            ["git", "config", "merge.theta.driver"], cwd=repo, env=env, capture_output=True
        ).returncode
        == 0
    )
    if has_driver:
        names = list(shapes)
        a_changed = [n for n in names if ".layers.1." in n] + ["lm_head.weight"]
        b_changed = [n for n in names if ".layers.2." in n] + ["lm_head.weight"]
        subprocess.run(["git", "switch", "-qc", "a"], cwd=repo, env=env, check=True)
        overwrite(model, a_changed, seed=1)
        share = sum(int(np.prod(shapes[n])) for n in a_changed) / sum(
            int(np.prod(s)) for s in shapes.values()
        )
        step(
            f"git commit -a (layer 1 + lm_head: {100 * share:.1f}% of parameters changed)",
            ["git", "commit", "-qam", "a"],
        )
        subprocess.run(["git", "switch", "-q", "main"], cwd=repo, env=env, check=True)
        overwrite(model, b_changed, seed=2)
        subprocess.run(["git", "commit", "-qam", "b"], cwd=repo, env=env, check=True)
        step(
            "git merge (1 conflicting tensor, average)",
            ["git", "-c", "theta.merge.strategy=average", "merge", "-q", "-m", "merge", "a"],
        )
        status = subprocess.run(
            ["git", "status", "--porcelain"], cwd=repo, env=env, capture_output=True, text=True
        ).stdout
        print("status clean after merge:", status == "", flush=True)
    print()
    print(
        f"| step ({size / 1e9:.1f} GB bf16, {len(shapes)} tensors) | time (s) "
        "| peak process (MB) | peak tree (MB) |"
    )
    print("|---|---|---|---|")
    for label, elapsed, single, tree in rows:
        print(f"| {label} | {elapsed:.1f} | {single / 1e6:.0f} | {tree / 1e6:.0f} |")
    print(f"\nbound (2 x largest tensor + 300 MB): {(2 * largest + 300e6) / 1e6:.0f} MB")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
