"""Merging two fine-tunes with `git merge`: the classic model-merging result in miniature.

A small MLP is trained briefly on all ten classes of scikit-learn's bundled digits data (the
"base"), then fine-tuned from that base on two disjoint tasks: digits 0-4 (branch A) and
digits 5-9 (branch B), each with its diagonal Fisher stored by `git theta add --fisher`.
Branch B is then merged into A by real `git merge`, once per strategy, and every model is
scored on both tasks (accuracy with the prediction restricted to the task's five classes)
and on all ten classes.

    .venv/bin/python benchmarks/bench_merge.py [--seed 0] [--epochs 30]

No download: the digits data ships with scikit-learn. Runs in well under a minute on CPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from git_theta.fisher_tools import diagonal_fisher, save_fisher

TASK_A = list(range(5))
TASK_B = list(range(5, 10))
STRATEGIES = ["average", "fisher", "task-arithmetic", "ties density=0.5"]


def data(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x / 16.0, y, test_size=0.3, random_state=seed, stratify=y)
    as_t = lambda a, dt: torch.tensor(a, dtype=dt)  # noqa: E731
    return (
        as_t(xtr, torch.float32),
        as_t(ytr, torch.long),
        as_t(xte, torch.float32),
        as_t(yte, torch.long),
    )


def mlp() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 10),
    )  # fmt: skip


def train(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 32):
            idx = order[i : i + 32]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()


def subset(
    x: torch.Tensor, y: torch.Tensor, classes: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    keep = torch.isin(y, torch.tensor(classes))
    return x[keep], y[keep]


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, classes: list[int]) -> float:
    xs, ys = subset(x, y, classes)
    logits = model(xs)[:, classes]
    pred = torch.tensor(classes)[logits.argmax(dim=1)]
    return float((pred == ys).float().mean())


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_THETA_NO_TTY": "1",
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@example.com",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@example.com",
    }
    proc = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"git {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def theta(repo: Path, *args: str) -> None:
    git(repo, "-c", "alias.theta=!" + f"{sys.executable} -m git_theta", "theta", *args)


def run(seed: int, epochs: int, empirical: bool) -> list[tuple[str, float, float, float]]:
    """(model, task A accuracy, task B accuracy, 10-way accuracy) for one seed."""
    torch.manual_seed(seed)
    xtr, ytr, xte, yte = data(seed)
    base = mlp()
    train(base, xtr[:150], ytr[:150], epochs=5, lr=0.05, seed=seed)
    tuned = {}
    fishers = {}
    for label, classes in (("A", TASK_A), ("B", TASK_B)):
        m = mlp()
        m.load_state_dict(base.state_dict())
        xs, ys = subset(xtr, ytr, classes)
        train(m, xs, ys, epochs=epochs, lr=0.01, seed=seed + 1)
        tuned[label] = m
        fishers[label] = diagonal_fisher(m, [(xs, ys)], expected=not empirical)

    rows = [("base", base), ("fine-tune A (0-4)", tuned["A"]), ("fine-tune B (5-9)", tuned["B"])]
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        git(repo, "init", "-q", "-b", "main")
        theta(repo, "install", "--local")
        theta(repo, "track", "*.safetensors")
        ckpt = repo / "model.safetensors"
        save_file(base.state_dict(), str(ckpt))
        git(repo, "add", ".gitattributes", "model.safetensors")
        git(repo, "commit", "-qm", "base")
        for label in ("B", "A"):
            git(repo, "switch", "-q", "-c", label, "main")
            save_file(tuned[label].state_dict(), str(ckpt))
            save_fisher(fishers[label], repo / f"fisher{label}.safetensors")
            theta(repo, "add", "model.safetensors", "--fisher", f"fisher{label}.safetensors")
            git(repo, "commit", "-qm", f"fine-tune {label}")
        tip_a = git(repo, "rev-parse", "A").strip()
        for strategy in STRATEGIES:
            git(repo, "reset", "-q", "--hard", tip_a)
            git(repo, "-c", f"theta.merge.strategy={strategy}", "merge", "-q", "--no-edit", "B")
            merged = mlp()
            merged.load_state_dict(load_file(str(ckpt)))
            rows.append((f"git merge, {strategy}", merged))
    out = []
    for name, model in rows:
        model.eval()
        out.append(
            (
                name,
                accuracy(model, xte, yte, TASK_A),
                accuracy(model, xte, yte, TASK_B),
                accuracy(model, xte, yte, list(range(10))),
            )
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5, help="runs, with seeds 0..N-1")
    ap.add_argument("--epochs", type=int, default=30, help="fine-tuning epochs per task")
    ap.add_argument(
        "--empirical",
        action="store_true",
        help="empirical Fisher (observed labels) instead of the expected one",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = [run(seed, args.epochs, args.empirical) for seed in range(args.seeds)]
    print("| model | task A (digits 0-4) | task B (digits 5-9) | all 10 digits |")
    print("|---|---|---|---|")
    for i, (name, *_rest) in enumerate(results[0]):
        cols = np.array([r[i][1:] for r in results])
        cells = [f"{m:.3f} ± {sd:.3f}" for m, sd in zip(cols.mean(0), cols.std(0), strict=True)]
        print(f"| {name} | {' | '.join(cells)} |")
    kind = "empirical" if args.empirical else "expected"
    print(
        f"\nmean ± std over {args.seeds} seeds; {args.epochs} fine-tuning epochs; {kind} "
        "Fisher; accuracy on the held-out 30% of the digits, a task's prediction restricted "
        "to its five classes"
    )


if __name__ == "__main__":
    main()
