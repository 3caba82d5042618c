"""git-theta quickstart: version a small model with plain git, and see what gets stored.

Run by `make demo`. It builds a small transformer-like model with torch, saves it as
safetensors, and in a fresh temporary repository:

  1. `git theta install --local` and `git theta track '*.safetensors'`,
  2. commits the base model, then a fine-tune in which only a few parameters changed,
  3. switches between the two commits and checks that the file comes back bit for bit,
  4. prints, per commit, the file's size next to the bytes that commit added to
     git-theta's store (.git/theta/objects) and to git's own objects (.git/objects).

Everything after `track` is plain git. The repository is kept; its path is printed.
Needs no network and no input.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

MODEL = "model.safetensors"
METADATA = {"demo": "git-theta quickstart"}


def say(text: str = "") -> None:
    print(text, flush=True)


def step(title: str) -> None:
    say()
    say(f"==> {title}")


class Repo:
    """A git repository driven through real git commands, each echoed like a shell would."""

    def __init__(self, path: Path, env: dict[str, str]) -> None:
        self.path = path
        self.env = env

    def run(self, *args: str, show: bool = True, quiet_output: bool = False) -> str:
        if show:
            say(f"$ {shlex.join(args)}")
        proc = subprocess.run(
            list(args),
            cwd=self.path,
            env=self.env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            say(proc.stdout + proc.stderr)
            raise SystemExit(f"demo failed: `{shlex.join(args)}` exited {proc.returncode}")
        out = proc.stdout.rstrip("\n")
        if show and out and not quiet_output:
            for line in out.splitlines():
                say(f"    {line}")
        return out

    def git(self, *args: str, show: bool = True, quiet_output: bool = False) -> str:
        return self.run("git", *args, show=show, quiet_output=quiet_output)


def tree_bytes(root: Path) -> int:
    """Total size of the files under `root` (0 if it does not exist)."""
    if not root.exists():
        return 0
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000  # type: ignore[assignment]
    raise AssertionError


def make_model(seed: int = 0) -> dict[str, torch.Tensor]:
    """A small transformer-shaped state dict (~1M parameters, ~4 MB in fp32)."""
    g = torch.Generator().manual_seed(seed)
    vocab, dim, hidden, blocks = 4096, 128, 512, 2

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.02

    sd: dict[str, torch.Tensor] = {"embed.weight": normal(vocab, dim)}
    for i in range(blocks):
        p = f"blocks.{i}."
        for name in ("q", "k", "v", "o"):
            sd[p + f"attn.{name}.weight"] = normal(dim, dim)
            sd[p + f"attn.{name}.bias"] = torch.zeros(dim)
        sd[p + "mlp.up.weight"] = normal(hidden, dim)
        sd[p + "mlp.up.bias"] = torch.zeros(hidden)
        sd[p + "mlp.down.weight"] = normal(dim, hidden)
        sd[p + "mlp.down.bias"] = torch.zeros(dim)
        sd[p + "ln1.weight"] = torch.ones(dim)
        sd[p + "ln1.bias"] = torch.zeros(dim)
        sd[p + "ln2.weight"] = torch.ones(dim)
        sd[p + "ln2.bias"] = torch.zeros(dim)
    sd["head.weight"] = normal(16, dim)
    sd["head.bias"] = torch.zeros(16)
    return sd


FINE_TUNED = ("head.weight", "head.bias", "blocks.1.mlp.down.weight")


def fine_tune(sd: dict[str, torch.Tensor], seed: int = 1) -> dict[str, torch.Tensor]:
    """A copy of `sd` in which only the parameters in FINE_TUNED moved (like a head-only tune)."""
    g = torch.Generator().manual_seed(seed)
    out = {k: v.clone() for k, v in sd.items()}
    for name in FINE_TUNED:
        out[name] = out[name] + torch.randn(out[name].shape, generator=g) * 1e-3
    return out


def tool_env() -> dict[str, str]:
    """This interpreter's scripts first on PATH, so `git theta` finds this git-theta."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.setdefault("GIT_THETA_NO_PROGRESS", "1")
    if shutil.which("git-theta", path=env["PATH"]) is None:
        raise SystemExit(
            "git-theta is not installed for this Python; run `make demo` (or `pip install -e .`)"
        )
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, help="where to create the demo repository")
    args = ap.parse_args(argv)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="git-theta-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    repo_dir = work / "repo"
    if repo_dir.exists():
        shutil.rmtree(repo_dir)
    repo_dir.mkdir()
    saved = work / "versions"
    saved.mkdir(exist_ok=True)
    repo = Repo(repo_dir, tool_env())
    gitdir = repo_dir / ".git"

    say("git-theta quickstart")
    say(f"demo repository: {repo_dir}")

    step("Create a small model with torch and save it as safetensors")
    base = make_model()
    nparams = sum(t.numel() for t in base.values())
    save_file(base, str(saved / "base.safetensors"), metadata=METADATA)
    tuned = fine_tune(base)
    save_file(tuned, str(saved / "tuned.safetensors"), metadata=METADATA)
    say(f"{len(base)} tensors, {nparams:,} parameters, {human(tree_bytes(saved) // 2)} per file")

    step("Make a git repository and let git-theta handle *.safetensors")
    repo.git("init", "-q", "-b", "main")
    for key, value in (
        ("user.name", "git-theta demo"),
        ("user.email", "demo@example.com"),
        ("commit.gpgsign", "false"),
        ("advice.detachedHead", "false"),
    ):
        repo.git("config", key, value, show=False)
    repo.run("git", "theta", "install", "--local")
    repo.run("git", "theta", "track", "*.safetensors")
    repo.run("cat", ".gitattributes")

    rows: list[tuple[str, int, int, int]] = []

    def commit(label: str, source: Path, *git_args: str) -> None:
        shutil.copyfile(source, repo_dir / MODEL)
        theta0, objects0 = tree_bytes(gitdir / "theta" / "objects"), tree_bytes(gitdir / "objects")
        for a in git_args:
            repo.git(*shlex.split(a))
        rows.append(
            (
                label,
                (repo_dir / MODEL).stat().st_size,
                tree_bytes(gitdir / "theta" / "objects") - theta0,
                tree_bytes(gitdir / "objects") - objects0,
            )
        )

    step("Commit the base model: from here on it is plain git")
    commit(
        "base",
        saved / "base.safetensors",
        f"add {MODEL} .gitattributes",
        "commit -q -m base",
    )
    repo.git("tag", "base", show=False)
    say("git keeps a small text manifest in place of the file (first lines):")
    manifest = repo.git("cat-file", "-p", f"HEAD:{MODEL}", show=False).splitlines()
    say(f"$ git cat-file -p HEAD:{MODEL} | head -5")
    for line in manifest[:5]:
        say("    " + (line if len(line) <= 150 else line[:147] + "..."))
    say(f"    ... ({len(manifest) - 3} parameter lines in all)")

    step(f"Fine-tune: {len(FINE_TUNED)} of {len(base)} tensors change ({', '.join(FINE_TUNED)})")
    commit("fine-tune", saved / "tuned.safetensors", "commit -q -a -m fine-tune")
    repo.git("tag", "fine-tune", show=False)
    repo.git("log", "--oneline")
    repo.git("diff", "--stat", "base", "fine-tune")

    step("Switch back and forth: git checks the right weights out")
    want = {
        "base": sha256(saved / "base.safetensors"),
        "fine-tune": sha256(saved / "tuned.safetensors"),
    }
    ok = True
    for rev, expected_sd in (("base", base), ("main", tuned), ("base", base), ("main", tuned)):
        repo.git("checkout", "-q", rev)
        label = "base" if rev == "base" else "fine-tune"
        same_bytes = sha256(repo_dir / MODEL) == want[label]
        loaded = load_file(str(repo_dir / MODEL))
        same_tensors = loaded.keys() == expected_sd.keys() and all(
            torch.equal(loaded[k], expected_sd[k]) for k in expected_sd
        )
        ok &= same_bytes and same_tensors
        say(
            f"    {MODEL} is the {label} file: byte-identical {'yes' if same_bytes else 'NO'}, "
            f"every tensor equal {'yes' if same_tensors else 'NO'}"
        )
    status = repo.git("status", "--porcelain")
    say(f"    git status: {'clean' if not status else 'NOT CLEAN'}")
    ok &= not status

    step("Delete the file and restore it from git")
    (repo_dir / MODEL).unlink()
    repo.git("checkout", "--", MODEL)
    restored = sha256(repo_dir / MODEL) == want["fine-tune"]
    say(f"    restored byte-identical: {'yes' if restored else 'NO'}")
    ok &= restored

    step("What each commit stored")
    say(f"{'commit':<10} {'file size':>11} {'.git/theta/objects':>19} {'.git/objects':>13}")
    for label, size, theta_b, objects_b in rows:
        say(f"{label:<10} {human(size):>11} {human(theta_b):>19} {human(objects_b):>13}")
    say(
        "The fine-tune added only the tensors that changed; .git/objects holds just the "
        "manifests, trees and commits."
    )

    say()
    if not ok:
        say("demo FAILED: a checkout did not give back the committed weights")
        return 1
    say("demo finished: every checkout gave back the committed weights bit for bit.")
    say(f"Look around: cd {repo_dir} && git log --stat")
    return 0


if __name__ == "__main__":
    sys.exit(main())
