"""Versions of tracked checkpoints: at a revision, in the index, in the working tree.

The building blocks of `git theta diff`, `status`, `ls-files` and `show`. Working-tree files
are cleaned into a scratch overlay (scratch.py), so none of these writes to the store; git
itself is only asked tree-to-tree and tree-to-index questions, which run no filter.
Paths are relative to the top of the working tree.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from git_theta import diff, git, manifest
from git_theta.errors import GitThetaError
from git_theta.manifest import Entry, Manifest
from git_theta.scratch import ScratchStore, clean_file, hash_tensors, scratch
from git_theta.store import Store
from git_theta.updates.base import Record

NULL_OID = "0" * 40


def top_pathspecs(pathspecs: Sequence[str], cwd: str | Path | None = None) -> list[str]:
    """User pathspecs (relative to `cwd`) rewritten relative to the top of the worktree."""
    prefix = git.run_text("rev-parse", "--show-prefix", cwd=cwd)
    return [p if p.startswith(":") or not prefix else prefix + p for p in pathspecs]


def manifest_at(spec: str, top: Path) -> Manifest | None:
    """The manifest stored at `spec` (`REV:path`, or `:path` for the index), None if absent
    or not a manifest."""
    data = git.show_blob(spec, cwd=top)
    if data is None or not manifest.is_manifest(data):
        return None
    return manifest.parse(data, spec)


def index_paths(top: Path, pathspecs: Sequence[str] = ()) -> list[str]:
    """Tracked checkpoints in the index (filter=theta), sorted, each once."""
    paths = sorted(set(git.lines_z("ls-files", "-z", "--", *pathspecs, cwd=top)))
    return git.theta_paths(paths, cwd=top)


def tree_paths(rev: str, top: Path, pathspecs: Sequence[str] = ()) -> list[str]:
    """Tracked checkpoints in the tree of `rev` (filter=theta per the current attributes)."""
    items = git.lines_z(
        "ls-tree", "-r", "-z", "--full-tree", "--name-only", rev, "--", *pathspecs, cwd=top
    )
    return git.theta_paths(sorted(items), cwd=top)


_DEBUG_RE = re.compile(
    r"([^\0\n]*)\0  ctime: (\d+):(\d+)\n  mtime: (\d+):(\d+)\n  dev: \d+\tino: (\d+)\n"
    r"  uid: \d+\tgid: \d+\n  size: (\d+)\tflags: [0-9a-f]+\n"
)


class IndexStat:
    """Which working-tree files git's index vouches for, by git's own stat rule.

    A file whose size, mtime, ctime and inode equal the index entry's, and that was not
    modified in the same tick the index was written ("racily clean"), holds the content the
    index names, so its manifest is the indexed one: no need to read and hash it.
    """

    def __init__(self, top: Path, paths: Sequence[str]) -> None:
        self.top = top
        self.entries: dict[str, tuple[int, int, int, int]] = {}
        if not paths:
            return
        index = Path(git.run_text("rev-parse", "--git-path", "index", cwd=top))
        index = index if index.is_absolute() else top / index
        try:
            self.index_mtime = index.stat().st_mtime_ns
        except OSError:
            return
        # paths are exact names, not patterns; past a few hundred, listing all is cheaper
        literal = list(paths) if len(paths) <= 256 else []
        out = git.run("--literal-pathspecs", "ls-files", "--debug", "-z", "--", *literal, cwd=top)
        for m in _DEBUG_RE.finditer(out.decode("utf-8", "surrogateescape")):
            ctime = int(m[2]) * 10**9 + int(m[3])
            mtime = int(m[4]) * 10**9 + int(m[5])
            self.entries[m[1]] = (ctime, mtime, int(m[6]), int(m[7]))

    def clean(self, path: str) -> bool:
        """True when the index vouches that `path` is unchanged."""
        want = self.entries.get(path)
        if want is None:
            return False
        try:
            st = (self.top / path).stat()
        except OSError:
            return False
        ctime, mtime, ino, size = want
        return (
            (st.st_ctime_ns, st.st_mtime_ns, st.st_size) == (ctime, mtime, size)
            and (ino == 0 or st.st_ino == ino)
            and st.st_mtime_ns < self.index_mtime
        )


def _vouched(path: str, top: Path, stat: IndexStat | None) -> Manifest | None:
    """The indexed manifest of `path` when the index's stat data vouches for the file (so it
    need not be read); None otherwise."""
    if stat is not None and stat.clean(path):
        return manifest_at(f":{path}", top)
    return None


def worktree_manifest(
    path: str,
    top: Path,
    store: ScratchStore,
    previous: Manifest | None,
    stat: IndexStat | None = None,
) -> Manifest | None:
    """The manifest the working-tree file would clean to (objects only in `store`).

    With `stat`, a file the index vouches for is not read: its manifest is the indexed one.
    """
    p = top / path
    if not p.is_file():
        return None
    if (indexed := _vouched(path, top, stat)) is not None:
        return indexed
    return clean_file(p, path, store, previous)


def _need_rev(rev: str, top: Path) -> str:
    oid = git.rev_parse(rev + "^{tree}", cwd=top)
    if oid is None:
        raise GitThetaError(f"{rev!r} is not a revision", hint="see `git log` for valid names")
    return rev


def _split_range(revs: Sequence[str], top: Path) -> list[str]:
    """`A..B` means A B and `A...B` means merge-base(A, B) B, as in `git diff`."""
    if len(revs) != 1 or ".." not in revs[0]:
        return list(revs)
    a, sep, b = revs[0].partition("...")
    if sep:
        a, b = a or "HEAD", b or "HEAD"
        return [git.run_text("merge-base", a, b, cwd=top), b]
    a, _, b = revs[0].partition("..")
    return [a or "HEAD", b or "HEAD"]


def diff_revisions(
    store: Store,
    top: Path,
    revs: Sequence[str],
    *,
    cached: bool = False,
    pathspecs: Sequence[str] = (),
    patterns: Sequence[str] = (),
) -> Iterator[diff.FileDiff]:
    """Per-file diffs as `git diff` chooses its sides: no rev = index vs working tree;
    one = REV vs working tree (with `cached`: REV, default HEAD, vs index); two (or `A..B`,
    `A...B`) = A vs B."""
    revs = _split_range(revs, top)
    if len(revs) > 2 or (cached and len(revs) > 1):
        raise GitThetaError("too many revisions", hint="give at most two (one with --cached)")
    for r in revs:
        _need_rev(r, top)
    if len(revs) == 2 or cached:
        yield from _diff_stored(store, top, revs, pathspecs, patterns)
        return
    with scratch(store) as overlay:
        if revs:
            paths = sorted(
                set(tree_paths(revs[0], top, pathspecs)) | set(index_paths(top, pathspecs))
            )
        else:
            paths = index_paths(top, pathspecs)
        stat = IndexStat(top, paths)
        for path in paths:
            try:
                old = manifest_at(f"{revs[0]}:{path}" if revs else f":{path}", top)
                new = worktree_manifest(path, top, overlay, old, stat)
            except GitThetaError as exc:
                yield diff.FileDiff(path, (), 0, error=str(exc))
                continue
            if old is None and new is None:
                continue
            if old is not None and new is not None and old.render() == new.render():
                continue
            d = diff.diff_manifests(path, old, new, store, new_store=overlay, patterns=patterns)
            if d.params or old is None or new is None:
                yield d


def _diff_stored(
    store: Store,
    top: Path,
    revs: Sequence[str],
    pathspecs: Sequence[str],
    patterns: Sequence[str],
) -> Iterator[diff.FileDiff]:
    """A vs B, or REV (default HEAD) vs the index: both sides are manifests in git."""
    if len(revs) == 2:
        a: str | None = revs[0]
        b_prefix = f"{revs[1]}:"
        names = git.lines_z(
            "diff", "--name-only", "-z", "--no-renames", revs[0], revs[1], "--", *pathspecs, cwd=top
        )
    else:
        a = revs[0] if revs else ("HEAD" if git.rev_parse("HEAD", cwd=top) else None)
        b_prefix = ":"
        if a is None:  # no commit yet: everything staged is new
            names = index_paths(top, pathspecs)
        else:
            names = git.lines_z(
                "diff",
                "--cached",
                "--name-only",
                "-z",
                "--no-renames",
                a,
                "--",
                *pathspecs,
                cwd=top,
            )
    for path in names:
        old = manifest_at(f"{a}:{path}", top) if a is not None else None
        new = manifest_at(b_prefix + path, top)
        if old is None and new is None:
            continue
        d = diff.diff_manifests(path, old, new, store, patterns=patterns)
        if d.params or old is None or new is None:
            yield d


# -- status --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileStatus:
    path: str
    state: str  # "modified", "deleted", "new" (untracked), "unchanged", "unreadable"
    changed: int = 0
    added: int = 0
    removed: int = 0
    params: int = 0
    error: str | None = None


def worktree_hashes(path: str, top: Path, stat: IndexStat | None = None) -> Manifest | None:
    """Names, dtypes, shapes and content hashes of the working-tree file, as a manifest
    whose records are placeholders: for comparisons by hash only. Nothing is stored."""
    p = top / path
    if not p.is_file():
        return None
    if (indexed := _vouched(path, top, stat)) is not None:
        return indexed
    with open(p, "rb") as f:
        head = f.read(64)
    if manifest.is_manifest(head):
        return manifest.parse(p.read_bytes(), path)
    tensors = hash_tensors(p, path)
    entries = (Entry(t.name, t.dtype, t.shape, t.hash, {"type": "unstored"}) for t in tensors)
    return Manifest("unknown", "0" * 64, 0, tuple(entries))


def status(store: Store, top: Path, pathspecs: Sequence[str] = ()) -> list[FileStatus]:
    """Each tracked checkpoint's state in the working tree against the index. Nothing is
    written: files the index vouches for are not read, the others are only hashed."""
    out = []
    paths = index_paths(top, pathspecs)
    stat = IndexStat(top, paths)
    for path in paths:
        try:
            old = manifest_at(f":{path}", top)
            new = worktree_hashes(path, top, stat)
        except GitThetaError as exc:
            out.append(FileStatus(path, "unreadable", error=str(exc)))
            continue
        if new is None:
            out.append(FileStatus(path, "deleted", params=len(old.entries) if old else 0))
            continue
        d = diff.diff_manifests(path, old, new, store, figures=False)
        out.append(
            FileStatus(
                path,
                "modified" if d.params else "unchanged",
                d.count("changed"),
                d.count("added"),
                d.count("removed"),
                len(new.entries),
            )
        )
    others = git.lines_z(
        "ls-files", "-z", "--others", "--exclude-standard", "--", *pathspecs, cwd=top
    )
    out += [FileStatus(p, "new") for p in git.theta_paths(sorted(others), cwd=top)]
    return sorted(out, key=lambda s: s.path)


# -- ls-files and show ---------------------------------------------------------------------------


def object_size(store: Store, oid: str) -> int | None:
    """Stored size of `oid`, None when it is not in the local store."""
    try:
        return store.path(oid).stat().st_size
    except OSError:
        return None


@dataclass(frozen=True)
class FileListing:
    path: str
    params: int
    raw_bytes: int
    stored_bytes: int  # every object this version needs (chain bases, skeleton) present locally
    missing: int  # objects it needs that are not in the local store
    format: str


def ls_files(store: Store, top: Path, rev: str | None = None) -> list[FileListing]:
    """Tracked checkpoints of the index (or of `rev`'s tree), with counts and sizes."""
    paths = tree_paths(_need_rev(rev, top), top) if rev else index_paths(top)
    out = []
    for path in paths:
        m = manifest_at(f"{rev}:{path}" if rev else f":{path}", top)
        if m is None:
            continue
        sizes = [object_size(store, oid) for oid in sorted(m.oids())]
        out.append(
            FileListing(
                path,
                len(m.entries),
                sum(e.nbytes for e in m.entries),
                sum(s for s in sizes if s is not None),
                sum(1 for s in sizes if s is None),
                m.format,
            )
        )
    return out


def own_oids(record: Record) -> list[str]:
    """Objects a record names itself, its nested bases excluded."""
    return sorted(
        v for k, v in record.items() if (k == "oid" or k.endswith("_oid")) and isinstance(v, str)
    )


def chain_depth(record: Record) -> int:
    """0 for a self-contained record, else how many nested bases lead to one."""
    depth = 0
    r = record
    while isinstance(r.get("base"), dict):
        r = r["base"]
        depth += 1
    return depth


@dataclass(frozen=True)
class ParamListing:
    name: str
    dtype: str
    shape: tuple[int, ...]
    record: str
    depth: int
    raw_bytes: int
    stored_bytes: int | None  # of the record's own objects; None if one is missing locally


def show(store: Store, top: Path, spec: str) -> tuple[Manifest, list[ParamListing]]:
    """The manifest at `spec` (`REV:PATH`, `:PATH`) and one row per parameter."""
    m = manifest_at(spec, top)
    if m is None:
        raise GitThetaError(
            f"{spec} is not a git-theta manifest",
            hint="name a tracked checkpoint as REV:PATH, e.g. HEAD:model.safetensors",
        )
    rows = []
    for e in m.entries:
        sizes = [object_size(store, o) for o in own_oids(e.record)]
        stored = None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)
        rows.append(
            ParamListing(
                e.name,
                e.dtype,
                e.shape,
                str(e.record["type"]),
                chain_depth(e.record),
                e.nbytes,
                stored,
            )
        )
    return m, rows
