"""git's long-running filter protocol serves a whole `git add` / `checkout` in one process;
the single-shot clean/smudge commands are only a fallback.

How starts are counted, without touching the code under test: every filter command in git's
config goes through a small shell wrapper that appends its arguments to a log file and then
execs the real `python -m git_theta ...`.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from tests.conftest import git

SHARDS = [f"model-{i:05d}-of-00004.safetensors" for i in range(1, 5)]


def write_wrapper(tmp: Path) -> tuple[Path, Path]:
    log = tmp / "filter-starts.log"
    wrapper = tmp / "theta-wrapper"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'echo "$1" >> {shlex.quote(str(log))}\n'
        f'exec {shlex.quote(sys.executable)} -m git_theta "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper, log


def configure(repo: Path, wrapper: Path, *, process: bool) -> None:
    w = shlex.quote(str(wrapper))
    git("config", "filter.theta.clean", f"{w} clean %f", cwd=repo)
    git("config", "filter.theta.smudge", f"{w} smudge %f", cwd=repo)
    if process:
        git("config", "filter.theta.process", f"{w} filter-process", cwd=repo)
    else:
        git("config", "--unset", "filter.theta.process", cwd=repo)


def starts(log: Path) -> list[str]:
    if not log.exists():
        return []
    lines = log.read_text().splitlines()
    log.unlink()
    return lines


def write_shards(repo: Path, minilm: Path) -> dict[str, bytes]:
    """The real MiniLM weights cut into 4 shards plus the usual index json."""
    tensors = load_file(str(minilm))
    names = list(tensors)
    weight_map = {}
    written = {}
    for i, shard in enumerate(SHARDS):
        part = {n: tensors[n] for n in names[i::4]}
        save_file(part, str(repo / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard))
        written[shard] = (repo / shard).read_bytes()
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())}}
    index["weight_map"] = dict(sorted(weight_map.items()))
    (repo / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return written


def test_install_registers_process_fallbacks_and_required(repo: Path) -> None:
    def get(key: str) -> str:
        return git("config", "--local", key, cwd=repo).stdout.strip()

    assert get("filter.theta.required") == "true"
    assert get("filter.theta.process").endswith("-m git_theta filter-process")
    assert get("filter.theta.clean").endswith("-m git_theta clean %f")
    assert get("filter.theta.smudge").endswith("-m git_theta smudge %f")
    attrs = (repo / ".gitattributes").read_text().splitlines()
    assert "*.safetensors filter=theta merge=theta diff=theta -text" in attrs


def test_one_process_serves_a_sharded_model(repo: Path, minilm: Path, tmp_path: Path) -> None:
    wrapper, log = write_wrapper(tmp_path)
    configure(repo, wrapper, process=True)
    written = write_shards(repo, minilm)

    git("add", ".", cwd=repo)
    assert starts(log) == ["filter-process"]  # one start for 4 shards; no single-shot clean
    git("commit", "-qm", "sharded model", cwd=repo)
    starts(log)  # commit may refresh the index; not what this test counts
    for shard in SHARDS:
        head = git("cat-file", "blob", f"HEAD:{shard}", cwd=repo).stdout
        assert head.startswith("git-theta-manifest 1\n")

    for shard in SHARDS:
        (repo / shard).unlink()
    git("checkout", "--", ".", cwd=repo)
    assert starts(log) == ["filter-process"]  # one start for 4 shards; no single-shot smudge
    for shard, data in written.items():
        assert (repo / shard).read_bytes() == data
    assert git("status", "--porcelain", cwd=repo).stdout == ""


def test_single_shot_fallback_when_process_is_unset(repo: Path, tmp_path: Path) -> None:
    wrapper, log = write_wrapper(tmp_path)
    configure(repo, wrapper, process=False)
    rng = np.random.default_rng(0)
    written = {}
    for shard in SHARDS:
        save_file({"w": rng.standard_normal((8, 8)).astype(np.float32)}, str(repo / shard))
        written[shard] = (repo / shard).read_bytes()

    git("add", *SHARDS, cwd=repo)
    assert sorted(starts(log)) == ["clean"] * 4
    git("commit", "-qm", "shards", cwd=repo)
    starts(log)
    assert git("cat-file", "blob", f"HEAD:{SHARDS[0]}", cwd=repo).stdout.startswith(
        "git-theta-manifest 1\n"
    )
    for shard in SHARDS:
        (repo / shard).unlink()
    git("checkout", "--", *SHARDS, cwd=repo)
    assert sorted(starts(log)) == ["smudge"] * 4
    for shard, data in written.items():
        assert (repo / shard).read_bytes() == data
    assert git("status", "--porcelain", cwd=repo).stdout == ""


def test_filter_process_and_single_shot_write_the_same_manifest(repo: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    save_file({"w": rng.standard_normal((16, 4)).astype(np.float32)}, str(repo / "a.safetensors"))
    git("add", "a.safetensors", cwd=repo)
    via_process = git("cat-file", "blob", ":a.safetensors", cwd=repo).stdout
    git("rm", "-q", "--cached", "a.safetensors", cwd=repo)
    git("config", "--unset", "filter.theta.process", cwd=repo)
    git("add", "a.safetensors", cwd=repo)
    via_single = git("cat-file", "blob", ":a.safetensors", cwd=repo).stdout
    assert via_process == via_single
