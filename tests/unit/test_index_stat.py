"""Stat data written straight into git's index, checked by git itself reading that index."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from git_theta import index_stat
from tests.conftest import git

MANIFEST = b"git-theta-manifest 1\nstand-in for a manifest\n"
CHECKPOINT = b"the checkpoint git-theta wrote in place of the manifest\n" * 100


def _repo(tmp_path: Path, *args: str) -> Path:
    """A repository whose index holds MANIFEST for model.bin, which holds CHECKPOINT."""
    repo = tmp_path / "r"
    git("init", "-q", *args, str(repo), cwd=tmp_path)
    (repo / "model.bin").write_bytes(MANIFEST)
    git("add", "model.bin", cwd=repo)
    (repo / "model.bin").write_bytes(CHECKPOINT)
    # a second back, as materialize.backdate does: not racy against the index written next
    st = os.stat(repo / "model.bin")
    os.utime(repo / "model.bin", ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))
    return repo


def _patch(repo: Path, blob: bytes = MANIFEST) -> set[str]:
    index, algorithm = index_stat.repo_layout(repo)
    st = os.stat(repo / "model.bin")
    written = {"model.bin": index_stat.Written(st, index_stat.blob_id(blob, algorithm))}
    return index_stat.patch(written, index=index, algorithm=algorithm)


def _debug(repo: Path, path: str) -> dict[str, str]:
    """`git ls-files --debug` of one path: {"mtime": "s:ns", "size": "...", ...}."""
    out: dict[str, str] = {}
    for line in git("ls-files", "--debug", "--", path, cwd=repo).stdout.splitlines()[1:]:
        words = line.replace("\t", " ").split()
        for key, value in zip(words[::2], words[1::2], strict=False):
            out[key.rstrip(":")] = value
    return out


def _modified(repo: Path) -> str:
    """What `git status` finds modified (it re-reads racy or size-0 entries, without a
    filter here, so a checkpoint git has to read differs from its "manifest" blob)."""
    out = git("status", "--porcelain", "--untracked-files=no", cwd=repo).stdout
    return " ".join(line[3:] for line in out.splitlines() if line[1] != " ")


def test_the_entry_gets_the_files_stat_data_and_git_reads_the_index(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    assert _modified(repo) == "model.bin"  # sizes differ: git sees a change without reading
    blob_before = git("rev-parse", ":model.bin", cwd=repo).stdout
    assert _patch(repo) == {"model.bin"}
    st = os.stat(repo / "model.bin")
    entry = _debug(repo, "model.bin")
    assert entry["size"] == str(len(CHECKPOINT))
    assert entry["mtime"] == f"{int(st.st_mtime)}:{st.st_mtime_ns % 10**9}"
    assert entry["ino"] == str(st.st_ino)
    assert _modified(repo) == ""  # git (checksum verified on read) trusts the new stat data
    assert git("rev-parse", ":model.bin", cwd=repo).stdout == blob_before
    assert not (repo / ".git" / "index.lock").exists()


def test_a_sha256_repository(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "--object-format=sha256")
    assert _patch(repo) == {"model.bin"}
    assert _modified(repo) == ""


def test_a_different_blob_is_left_alone(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    before = (repo / ".git" / "index").read_bytes()
    assert _patch(repo, blob=b"another manifest\n") == set()
    assert (repo / ".git" / "index").read_bytes() == before
    assert _modified(repo) == "model.bin"


def test_an_index_locked_by_git_is_left_to_git(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    lock = repo / ".git" / "index.lock"
    lock.write_bytes(b"another git is writing")
    before = (repo / ".git" / "index").read_bytes()
    assert _patch(repo) == set()
    assert lock.read_bytes() == b"another git is writing"
    assert (repo / ".git" / "index").read_bytes() == before


def test_version_4_and_split_indexes_are_left_to_git(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    git("update-index", "--index-version", "4", cwd=repo)
    assert _patch(repo) == set()
    git("update-index", "--index-version", "2", cwd=repo)
    git("update-index", "--split-index", cwd=repo)
    assert b"link" in (repo / ".git" / "index").read_bytes()
    assert _patch(repo) == set()
    assert _modified(repo) == "model.bin"


def test_entries_with_extended_flags_are_walked(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo / "a-intent.txt").write_text("later\n")
    git("add", "-N", "a-intent.txt", cwd=repo)  # intent-to-add: an extended flag, index v3
    assert (repo / ".git" / "index").read_bytes()[4:8] == b"\0\0\0\3"
    assert _patch(repo) == {"model.bin"}
    assert _modified(repo) == "a-intent.txt"


def test_entries_racy_against_the_old_index_are_smudged(tmp_path: Path) -> None:
    """An entry whose mtime is in the second the index was written must keep being checked
    by content once the index is rewritten (git's racy-git rule): its size goes to 0."""
    repo = _repo(tmp_path)
    other = repo / "other.txt"
    other.write_text("12345\n")
    git("add", "other.txt", cwd=repo)
    index = repo / ".git" / "index"
    mtime = os.stat(other).st_mtime_ns
    os.utime(index, ns=(mtime, mtime))  # the index written in that very second
    assert _debug(repo, "other.txt")["size"] == "6"
    assert _patch(repo) == {"model.bin"}
    assert _debug(repo, "other.txt")["size"] == "0"
    assert _modified(repo) == ""  # git looked at the content: unchanged
    other.write_text("54321\n")  # same size, same second: only the content tells
    os.utime(other, ns=(mtime, mtime))
    assert _modified(repo) == "other.txt"


@pytest.mark.parametrize("damage", ["truncated", "bad-signature"])
def test_a_damaged_index_is_left_to_git(tmp_path: Path, damage: str) -> None:
    repo = _repo(tmp_path)
    index = repo / ".git" / "index"
    data = index.read_bytes()
    bad = data[:40] if damage == "truncated" else b"XXXX" + data[4:]
    index.write_bytes(bad)
    assert _patch(repo) == set()
    assert index.read_bytes() == bad
    assert not (repo / ".git" / "index.lock").exists()
