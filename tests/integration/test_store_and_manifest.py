"""The store and the manifest as real `git add` leaves them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import blake3
import numpy as np
from safetensors.numpy import save_file

from tests.conftest import git, store_objects, theta


def store_files(repo: Path) -> set[str]:
    root = repo / ".git" / "theta"
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def new_repo(path: Path) -> Path:
    path.mkdir()
    git("init", "-q", cwd=path)
    theta("install", "--local", cwd=path)
    theta("track", "*.safetensors", cwd=path)
    return path


def manifest_lines(repo: Path, spec: str) -> list[dict[str, object]]:
    text = git("cat-file", "blob", spec, cwd=repo).stdout
    return [json.loads(line) for line in text.splitlines()[3:]]


def test_objects_are_content_addressed_sharded_and_read_only(repo: Path, minilm: Path) -> None:
    shutil.copyfile(minilm, repo / "model.safetensors")
    git("add", "model.safetensors", cwd=repo)
    objects = repo / ".git" / "theta" / "objects"
    files = [p for p in objects.rglob("*") if p.is_file()]
    assert len(files) > 50
    for p in files:
        oid = p.name
        assert p.relative_to(objects).parts == (oid[:2], oid[2:4], oid)
        assert hashlib.sha256(p.read_bytes()).hexdigest() == oid
        assert stat.S_IMODE(p.stat().st_mode) & 0o222 == 0
    # no temporary file survives a successful add
    assert {p.parts[0] for p in map(Path, store_files(repo))} <= {"objects", "rawmap"}
    # every object is named by the manifest, and the manifest names only stored objects
    text = git("cat-file", "blob", ":model.safetensors", cwd=repo).stdout
    named = {line.split()[1] for line in text.splitlines() if line.startswith("skeleton ")}
    named |= {str(e["record"]["oid"]) for e in manifest_lines(repo, ":model.safetensors")}  # type: ignore[index]
    assert named == {p.name for p in files}


def test_same_checkpoint_same_manifest_and_objects_in_two_repos(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    tensors = {f"w{i}": rng.standard_normal((32, 8)).astype(np.float32) for i in range(6)}
    blobs, objects = [], []
    for name in ("a", "b"):
        r = new_repo(tmp_path / name)
        save_file(tensors, str(r / "m.safetensors"))
        git("add", "m.safetensors", cwd=r)
        blobs.append(git("rev-parse", ":m.safetensors", cwd=r).stdout)
        objects.append(store_objects(r))
    assert blobs[0] == blobs[1]  # same manifest bytes -> same git blob id
    assert objects[0] == objects[1]


def test_manifest_is_canonical_sorted_one_parameter_per_line(repo: Path) -> None:
    rng = np.random.default_rng(6)
    # file order (insertion) differs from name order
    names = ["zeta", "alpha", "mid.b", "mid.a", "Upper"]
    tensors = {n: rng.standard_normal(4).astype(np.float32) for n in names}
    save_file(tensors, str(repo / "m.safetensors"))
    git("add", "m.safetensors", cwd=repo)
    text = git("cat-file", "blob", ":m.safetensors", cwd=repo).stdout
    lines = text.splitlines()
    assert lines[0] == "git-theta-manifest 1"
    assert lines[1] == "format safetensors"
    assert lines[2].startswith("skeleton ")
    entries = [json.loads(line) for line in lines[3:]]
    assert [e["name"] for e in entries] == sorted(names)
    for line, e in zip(lines[3:], entries, strict=True):
        assert list(e) == ["name", "dtype", "shape", "hash", "record"]
        assert line == json.dumps(e, separators=(",", ":"))
        h = e["hash"]
        assert h == "blake3:" + blake3.blake3(tensors[e["name"]].tobytes()).hexdigest()
    # a second, independent clean of the same bytes renders the same text
    first = git("rev-parse", ":m.safetensors", cwd=repo).stdout
    git("rm", "-q", "--cached", "m.safetensors", cwd=repo)
    shutil.rmtree(repo / ".git" / "theta")
    git("add", "m.safetensors", cwd=repo)
    assert git("rev-parse", ":m.safetensors", cwd=repo).stdout == first


def test_unchanged_parameters_are_not_stored_again(repo: Path) -> None:
    rng = np.random.default_rng(7)
    tensors = {f"layer{i}": rng.standard_normal((16, 16)).astype(np.float32) for i in range(8)}
    save_file(tensors, str(repo / "m.safetensors"))
    git("add", "m.safetensors", cwd=repo)
    git("commit", "-qm", "v1", cwd=repo)
    v1 = store_files(repo)
    # same file written again (new mtime): nothing new at all
    save_file(tensors, str(repo / "m.safetensors"))
    git("add", "m.safetensors", cwd=repo)
    assert store_files(repo) == v1
    assert git("status", "--porcelain", cwd=repo).stdout == ""
    # two tensors change: exactly two new tensor objects (the header is unchanged)
    tensors["layer2"] = tensors["layer2"] * 2
    tensors["layer5"] = tensors["layer5"] + 1
    save_file(tensors, str(repo / "m.safetensors"))
    git("add", "m.safetensors", cwd=repo)
    new = {p for p in store_files(repo) - v1 if p.startswith("objects/")}
    assert len(new) == 2
    before = {e["name"]: e["record"] for e in manifest_lines(repo, "HEAD:m.safetensors")}
    after = {e["name"]: e["record"] for e in manifest_lines(repo, ":m.safetensors")}
    assert {n for n in before if before[n] != after[n]} == {"layer2", "layer5"}


def test_identical_tensors_across_names_and_files_are_stored_once(repo: Path) -> None:
    rng = np.random.default_rng(8)
    shared = rng.standard_normal((64, 64)).astype(np.float32)
    own_a = rng.standard_normal(8).astype(np.float32)
    own_b = rng.standard_normal(8).astype(np.float32)
    save_file({"emb": shared, "lm_head": shared.copy(), "x": own_a}, str(repo / "a.safetensors"))
    save_file({"tied": shared.copy(), "y": own_b}, str(repo / "b.safetensors"))
    git("add", "a.safetensors", "b.safetensors", cwd=repo)
    # shared (once) + own_a + own_b + one skeleton per file
    assert len(store_objects(repo)) == 5
    rec_a = {e["name"]: e["record"] for e in manifest_lines(repo, ":a.safetensors")}
    rec_b = {e["name"]: e["record"] for e in manifest_lines(repo, ":b.safetensors")}
    assert rec_a["emb"] == rec_a["lm_head"] == rec_b["tied"]


def test_no_temporary_files_after_a_failed_add(repo: Path) -> None:
    rng = np.random.default_rng(9)
    save_file({"w": rng.standard_normal(1000).astype(np.float32)}, str(repo / "m.safetensors"))
    data = (repo / "m.safetensors").read_bytes()
    (repo / "m.safetensors").write_bytes(data[:-100])
    assert git("add", "m.safetensors", cwd=repo, check=False).returncode != 0
    tmp = repo / ".git" / "theta" / "tmp"
    assert not tmp.exists() or os.listdir(tmp) == []
