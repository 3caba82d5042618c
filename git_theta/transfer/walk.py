"""Which objects a push or fetch moves: the manifests in some git history, and their objects.

This is the transfer's own minimal reachability walk (a fuller one for gc may live in
git_theta/reachability.py; the two can be unified). A push of local commits L to a remote
whose refs were at O moves the objects of every manifest blob that `git rev-list --objects
L --not O` lists: blobs new in the pushed range, whatever commit (merge, rebase, history
made before git-theta was installed) brought them. Manifests are recognised by content
(their first line), so no `.gitattributes` of any past commit needs to be consulted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from git_theta import git, manifest
from git_theta.errors import GitThetaError
from git_theta.manifest import Manifest
from git_theta.transfer.base import ObjectRef

ZERO = "0" * 40
MAX_MANIFEST_BLOB = 256 << 20
READ_BUDGET = 64 << 20  # bytes of blobs read per `git cat-file --batch`


@dataclass(frozen=True)
class PushedRef:
    """One line of what git tells a pre-push hook."""

    local_ref: str
    local_sha: str
    remote_ref: str
    remote_sha: str


def parse_pre_push(text: str) -> list[PushedRef]:
    """The `<local ref> <local sha> <remote ref> <remote sha>` lines git sends pre-push."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4:
            out.append(PushedRef(*parts))
    return out


@dataclass
class Found:
    """Manifests found in a walk, and blobs that looked like manifests but did not parse."""

    manifests: list[Manifest] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)

    def objects(self) -> list[ObjectRef]:
        refs: dict[str, ObjectRef] = {}
        for m in self.manifests:
            for ref in manifest_objects(m):
                if ref.oid not in refs or refs[ref.oid].size is None:
                    refs[ref.oid] = ref
        return sorted(refs.values(), key=lambda r: r.oid)


def pushed_range(refs: Sequence[PushedRef], remote_name: str | None, repo: Path) -> list[str]:
    """rev-list arguments for the commits a push sends that the remote does not have."""
    include = [r.local_sha for r in refs if r.local_sha != ZERO]
    if not include:
        return []
    exclude = [
        r.remote_sha for r in refs if r.remote_sha != ZERO and git.is_commit(r.remote_sha, repo)
    ]
    args = [*include, "--not", *exclude]
    if remote_name and len(exclude) < len(refs):
        # like git-lfs: an unknown remote tip (new branch, or history we do not have)
        # -> what the remote-tracking refs say the remote already has
        args.append(f"--remotes={remote_name}")
    return args


def manifests_in_history(rev_args: Sequence[str], repo: Path) -> Found:
    """Manifests among the blobs `git rev-list --objects REV_ARGS` lists."""
    if not rev_args:
        return Found()
    ids = git.rev_list_objects(list(rev_args), cwd=repo)
    return _manifests(ids, repo)


def manifests_in_trees(revs: Iterable[str], repo: Path) -> Found:
    """Manifests among the files of the trees of `revs` (what a checkout of them needs)."""
    ids: dict[str, None] = {}
    for rev in revs:
        for sha, _path in git.tree_blobs(rev, cwd=repo):
            ids[sha] = None
    return _manifests(list(ids), repo)


def _manifests(ids: list[str], repo: Path) -> Found:
    sizes = git.blob_sizes(ids, cwd=repo)
    low = len(manifest.MAGIC)
    candidates = sorted((s, sha) for sha, s in sizes.items() if low <= s <= MAX_MANIFEST_BLOB)
    found = Found()
    for batch in _batches(candidates):
        for blob_id, data in git.read_blobs(batch, cwd=repo).items():
            if not manifest.is_manifest(data):
                continue
            try:
                found.manifests.append(manifest.parse(data, f"blob {blob_id[:12]}"))
            except GitThetaError:
                found.malformed.append(blob_id)
    return found


def _batches(candidates: Sequence[tuple[int, str]]) -> Iterator[list[str]]:
    """Blob ids grouped so that one read holds at most READ_BUDGET bytes (or one blob)."""
    batch: list[str] = []
    budget = 0
    for size, sha in candidates:
        if batch and budget + size > READ_BUDGET:
            yield batch
            batch, budget = [], 0
        batch.append(sha)
        budget += size
    if batch:
        yield batch


def manifest_objects(m: Manifest) -> list[ObjectRef]:
    """Every object `m` needs with its stored size when the manifest records it.

    Sizes pair with ids by name: `oid` with `size`, `<x>_oid` with `<x>_size`, in the same
    record; the skeleton line gives the skeleton's.
    """
    refs = {m.skeleton_oid: ObjectRef(m.skeleton_oid, m.skeleton_size)}
    records: list[Any] = []
    for e in m.entries:
        records.append(e.record)
        records.extend(e.extra.values())
    while records:
        r = records.pop()
        if not isinstance(r, Mapping):
            continue
        for key, value in r.items():
            if (key == "oid" or key.endswith("_oid")) and isinstance(value, str):
                size = r.get(key[: -len("oid")] + "size")
                ok = isinstance(size, int) and not isinstance(size, bool) and size >= 0
                if value not in refs or refs[value].size is None:
                    refs[value] = ObjectRef(value, size if ok else None)
            elif isinstance(value, Mapping):
                records.append(value)
    return list(refs.values())
