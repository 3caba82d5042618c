"""Every expected failure: one line naming the file (and parameter) and the fix, a non-zero
exit of the git command, and the index and the store exactly as they were."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from git_theta import plugins
from tests.conftest import git

NAME = "model.safetensors"


def snapshot(repo: Path) -> tuple[str, dict[str, str]]:
    """`git ls-files -s` and every store file with the sha256 of its content."""
    index = git("ls-files", "-s", cwd=repo).stdout
    root = repo / ".git" / "theta"
    files = {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
    return index, files


def theta_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("git-theta")]


def commit_two_versions(repo: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    tensors = {
        "encoder.weight": rng.standard_normal((64, 32)).astype(np.float32),
        "encoder.bias": rng.standard_normal(32).astype(np.float32),
    }
    save_file(tensors, str(repo / NAME))
    git("add", NAME, cwd=repo)
    git("commit", "-qm", "v1", cwd=repo)
    tensors["encoder.bias"] = tensors["encoder.bias"] + 1
    save_file(tensors, str(repo / NAME))
    git("commit", "-qam", "v2", cwd=repo)
    return tensors


def failing_add(repo: Path, content: bytes) -> str:
    """`git add` of `content` as NAME must fail and leave index and store untouched."""
    before = snapshot(repo)
    (repo / NAME).write_bytes(content)
    proc = git("add", NAME, cwd=repo, check=False)
    assert proc.returncode != 0
    assert f"fatal: {NAME}: clean filter 'theta' failed" in proc.stderr
    assert snapshot(repo) == before
    lines = theta_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    return lines[0]


def good_file(repo: Path) -> bytes:
    commit_two_versions(repo)
    return (repo / NAME).read_bytes()


def test_truncated_in_the_header(repo: Path) -> None:
    data = good_file(repo)
    line = failing_add(repo, data[:40])
    assert line == (
        f"git-theta: error: {NAME}: truncated safetensors file: the header is incomplete; "
        "the file was cut short; restore it from its source"
    )


def test_truncated_in_a_tensor(repo: Path) -> None:
    data = good_file(repo)
    line = failing_add(repo, data[:-1000])
    # tensors are in name order in the file: encoder.bias, then encoder.weight (8192 bytes)
    assert line == (
        f"git-theta: error: {NAME}: truncated safetensors file: tensor encoder.weight is "
        "missing 1000 of its 8192 bytes; the file was cut short; restore it from its source"
    )


def test_trailing_garbage(repo: Path) -> None:
    data = good_file(repo)
    line = failing_add(repo, data + b"\0" * 7)
    assert line == f"git-theta: error: {NAME}: 7 unexpected bytes after the last tensor"


@pytest.mark.parametrize(
    "content",
    [
        np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        b"these are my notes, not a model\n",
        b"",
    ],
    ids=["random-bytes", "text", "empty"],
)
def test_not_a_checkpoint_under_a_tracked_pattern(repo: Path, content: bytes) -> None:
    good_file(repo)
    line = failing_add(repo, content)
    installed = ", ".join(plugins.available(plugins.CHECKPOINTS))
    assert line == (
        f"git-theta: error: {NAME}: is not a checkpoint in any installed format; formats "
        f"installed: {installed}; or untrack it with `git theta untrack`"
    )


def object_of(repo: Path, spec: str, param: str) -> Path:
    text = git("cat-file", "blob", spec, cwd=repo).stdout
    entries = {e["name"]: e for e in map(json.loads, text.splitlines()[3:])}
    oid = entries[param]["record"]["oid"]
    return repo / ".git" / "theta" / "objects" / oid[:2] / oid[2:4] / oid


def failing_checkout(repo: Path, *args: str) -> str:
    before = snapshot(repo)
    proc = git("checkout", *args, cwd=repo, check=False)
    assert proc.returncode != 0
    assert f"fatal: {NAME}: smudge filter theta failed" in proc.stderr
    assert snapshot(repo) == before
    lines = theta_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_corrupt_object_on_checkout(repo: Path) -> None:
    commit_two_versions(repo)
    victim = object_of(repo, f"HEAD~1:{NAME}", "encoder.bias")
    victim.chmod(0o644)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x40
    victim.write_bytes(bytes(data))
    line = failing_checkout(repo, "HEAD~1", "--", NAME)
    oid = victim.name
    assert re.fullmatch(
        f"git-theta: error: {NAME}: parameter encoder.bias: object {oid[:12]} is corrupt "
        r"\(content hashes to [0-9a-f]{12}\); remove it and run `git theta fetch` to download "
        r"a good copy; `git theta fsck` lists every damaged object",
        line,
    )
    # git deleted the old file before the filter failed; the committed version comes back
    git("checkout", "--", NAME, cwd=repo)
    assert git("status", "--porcelain", cwd=repo).stdout == ""


def test_missing_object_on_checkout(repo: Path) -> None:
    commit_two_versions(repo)
    victim = object_of(repo, f"HEAD~1:{NAME}", "encoder.bias")
    victim.chmod(0o644)
    victim.unlink()
    line = failing_checkout(repo, "HEAD~1", "--", NAME)
    assert line == (
        f"git-theta: error: {NAME}: parameter encoder.bias: object {victim.name[:12]} is "
        "missing from the local store; run `git theta fetch` to download it from the remote"
    )


def stage_verbatim(repo: Path, text: str) -> None:
    """Stage `text` as the file's blob as it is, bypassing the clean filter."""
    blob = git("hash-object", "-w", "--no-filters", "--stdin", cwd=repo, input=text.encode()).stdout
    git("update-index", "--cacheinfo", f"100644,{blob.strip()},{NAME}", cwd=repo)


def test_malformed_manifest_committed_directly(repo: Path) -> None:
    commit_two_versions(repo)
    good = git("cat-file", "blob", f"HEAD:{NAME}", cwd=repo).stdout
    bad = good.replace('"shape":[32]', '"shape":[-32]')
    assert bad != good
    stage_verbatim(repo, bad)
    git("commit", "-qm", "bad manifest", cwd=repo)
    (repo / NAME).unlink()
    line = failing_checkout(repo, "--", NAME)
    assert line == (
        f"git-theta: error: {NAME}: malformed git-theta manifest (line 4): bad shape for "
        "encoder.bias; check out a good version of the file, or `git theta fsck`"
    )


def test_manifest_of_a_newer_version(repo: Path) -> None:
    commit_two_versions(repo)
    good = git("cat-file", "blob", f"HEAD:{NAME}", cwd=repo).stdout
    newer = good.replace("git-theta-manifest 1", "git-theta-manifest 2")
    stage_verbatim(repo, newer)
    (repo / NAME).unlink()
    line = failing_checkout(repo, "--", NAME)
    assert "version '2' is not supported by this git-theta (reads 1)" in line
