"""Which manifests (and so which store objects) the repository can still reach.

Shared by `git theta gc` and `fsck` (everything reachable), `git theta log` (per commit) and
the transfer code (what a push must upload). Manifests are recognised by their content (the
`git-theta-manifest` magic), not by the current `.gitattributes`, so a file whose pattern was
later untracked still keeps its objects alive.

- `manifest_blobs(rev_args)`: each manifest blob reachable from `git rev-list REV_ARGS`
  once, with one path it was seen at: cheap, for sets (gc, fsck, push).
- `manifests_in_commits(revs)`: (commit, path, Manifest) for every manifest in the tree of
  each commit in `revs` (no ancestors): for reports that need the commit.
- `live_manifests()`: every manifest reachable from any ref, any reflog (stash entries
  included), in-progress operation heads, and every index stage of every worktree.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from git_theta import git, manifest
from git_theta.errors import GitThetaError
from git_theta.filters import MAX_MANIFEST
from git_theta.manifest import Manifest

# Heads of operations in progress: not refs, so `--all` misses them, yet they are live.
PSEUDO_HEADS = (
    "HEAD",
    "ORIG_HEAD",
    "MERGE_HEAD",
    "CHERRY_PICK_HEAD",
    "REVERT_HEAD",
    "REBASE_HEAD",
    "FETCH_HEAD",
)


@dataclass(frozen=True)
class FoundManifest:
    """A manifest blob, one path it is stored at, and its parsed content (None if malformed)."""

    blob: str
    path: str
    manifest: Manifest | None
    error: str | None = None


def _parse(blob: str, data: bytes, path: str) -> FoundManifest | None:
    if not manifest.is_manifest(data) or len(data) > MAX_MANIFEST:
        return None
    try:
        return FoundManifest(blob, path, manifest.parse(data, path))
    except GitThetaError as exc:
        return FoundManifest(blob, path, None, str(exc))


def read_manifests(
    blobs: Iterable[tuple[str, str]], cwd: str | Path | None = None
) -> Iterator[FoundManifest]:
    """The manifests among `(blob id, path)` pairs; other blobs are skipped.

    Blob sizes are asked first, so a large blob (a checkpoint committed before it was
    tracked, say) is never read just to learn it is not a manifest.
    """
    pairs = list(blobs)
    sizes = git.blob_sizes([b for b, _ in pairs], cwd=cwd)
    low = len(manifest.MAGIC)
    with git.BlobReader(cwd) as reader:
        for blob, path in pairs:
            if not low <= sizes.get(blob, -1) <= MAX_MANIFEST:
                continue
            got = reader.read(blob)
            if got is None or got[0] != "blob":
                continue
            found = _parse(blob, got[1], path)
            if found is not None:
                yield found


def _blob_lines(rev_args: Sequence[str], cwd: str | Path | None) -> list[tuple[str, str]]:
    out = git.run(
        "rev-list",
        "--objects",
        "--filter=object:type=blob",
        "--filter-provided-objects",
        *rev_args,
        "--",
        cwd=cwd,
    ).decode("utf-8", "surrogateescape")
    pairs: dict[str, str] = {}
    for line in out.splitlines():
        oid, _, path = line.partition(" ")
        if oid and oid not in pairs:
            pairs[oid] = path
    return list(pairs.items())


def manifest_blobs(
    rev_args: Sequence[str], cwd: str | Path | None = None
) -> Iterator[FoundManifest]:
    """Each manifest blob reachable from `git rev-list REV_ARGS` (trees of those commits and
    their ancestors; `--indexed-objects` etc. work too), once, with one path it is at."""
    yield from read_manifests(_blob_lines(rev_args, cwd), cwd)


def manifests_in_commits(
    revs: Sequence[str], cwd: str | Path | None = None, paths: Sequence[str] = ()
) -> Iterator[tuple[str, str, Manifest]]:
    """(commit, path, Manifest) for each manifest in the tree of each of `revs` (no ancestors;
    pass `git rev-list` output for a range). Malformed manifests are skipped; `paths` limits
    the walk to those pathspecs."""
    cache: dict[str, Manifest | None] = {}
    with git.BlobReader(cwd) as reader:
        for rev in revs:
            entries = git.lines_z("ls-tree", "-r", "-z", "--full-tree", rev, "--", *paths, cwd=cwd)
            for item in entries:
                meta, _, path = item.partition("\t")
                _mode, kind, blob = meta.split()
                if kind != "blob":
                    continue
                if blob not in cache:
                    got = reader.read(blob)
                    found = _parse(blob, got[1], path) if got is not None else None
                    cache[blob] = found.manifest if found is not None else None
                m = cache[blob]
                if m is not None:
                    yield rev, path, m


def index_blobs(cwd: str | Path | None = None) -> list[tuple[str, str]]:
    """(blob, path) of every index entry of this worktree, all merge stages included."""
    out = []
    for item in git.lines_z("ls-files", "-s", "-z", cwd=cwd):
        meta, _, path = item.partition("\t")
        parts = meta.split()
        if len(parts) == 3:
            out.append((parts[1], path))
    return out


def live_rev_args(cwd: str | Path | None = None) -> list[str]:
    """`git rev-list` arguments naming everything the repository still needs."""
    args = ["--all", "--reflog", "--indexed-objects"]
    for head in PSEUDO_HEADS:
        oid = git.rev_parse(head + "^{commit}", cwd=cwd)
        if oid is not None:
            args.append(oid)
    return args


def live_manifests(cwd: str | Path | None = None) -> Iterator[FoundManifest]:
    """Every manifest any ref, reflog, stash, in-progress operation or index stage reaches."""
    pairs = dict(_blob_lines(live_rev_args(cwd), cwd))
    for blob, path in index_blobs(cwd):
        pairs.setdefault(blob, path)
    yield from read_manifests(pairs.items(), cwd)
