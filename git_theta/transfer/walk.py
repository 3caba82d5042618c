"""Which objects a push or fetch moves: the manifests in some git history, and their objects.

The walk itself is git_theta/reachability.py's, shared with gc and fsck. A push of local
commits L to a remote whose refs were at O moves the objects of every manifest blob that
`git rev-list --objects L --not O` lists: blobs new in the pushed range, whatever commit
(merge, rebase, history made before git-theta was installed) brought them. Manifests are
recognised by content (their first line), so no `.gitattributes` of any past commit needs
to be consulted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from git_theta import git, reachability
from git_theta.manifest import Manifest
from git_theta.transfer.base import ObjectRef

ZERO = "0" * 40


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
    return _found(reachability.manifest_blobs(rev_args, repo))


def manifests_in_trees(revs: Iterable[str], repo: Path) -> Found:
    """Manifests among the files of the trees of `revs` (what a checkout of them needs)."""
    pairs: dict[str, str] = {}
    for rev in revs:
        for sha, path in git.tree_blobs(rev, cwd=repo):
            pairs.setdefault(sha, path)
    return _found(reachability.read_manifests(pairs.items(), repo))


def _found(manifests: Iterable[reachability.FoundManifest]) -> Found:
    found = Found()
    for f in manifests:
        if f.manifest is not None:
            found.manifests.append(f.manifest)
        else:
            found.malformed.append(f.blob)
    return found


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
