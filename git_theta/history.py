"""`git theta log`: what each commit did to the tracked checkpoints.

Per commit (against its first parent; for a merge, bytes count only objects no parent
had) and per checkpoint: how many parameters were added,
removed or changed, how the new values are stored (count per record type: dense, sparse,
low-rank, ...) and how many bytes of objects the commit added to the store (objects the
new manifest needs that the parent's manifest did not).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from git_theta import diff, git, manifest
from git_theta.manifest import Manifest
from git_theta.store import Store
from git_theta.versions import object_size


@dataclass(frozen=True)
class FileChange:
    path: str
    added: int
    removed: int
    changed: int
    stored_as: dict[str, int]  # record type -> parameters newly stored that way
    new_objects: int
    new_bytes: int  # of the new objects present locally
    missing: int  # new objects not in the local store (size unknown)
    deleted: bool = False


@dataclass(frozen=True)
class CommitChange:
    commit: str
    date: str
    author: str
    subject: str
    files: tuple[FileChange, ...] = field(default_factory=tuple)


def file_change(
    store: Store,
    path: str,
    old: Manifest | None,
    new: Manifest | None,
    others: Sequence[Manifest] = (),
) -> FileChange:
    """What going from `old` to `new` did to one checkpoint (no store reads but sizes).

    `others`: the file in a merge's other parents; their objects are not new either."""
    d = diff.diff_manifests(path, old, new, store, figures=False)
    kinds: Counter[str] = Counter()
    for p in d.params:
        if p.new is not None:
            kinds[str(p.new.record["type"])] += 1
    # a record change without a value change (e.g. re-encoded as a patch) is storage too
    if old is not None and new is not None:
        before = old.by_name()
        for e in new.entries:
            b = before.get(e.name)
            if b is not None and b.hash == e.hash and b.record != e.record:
                kinds[str(e.record["type"])] += 1
    known = set().union(*(m.oids() for m in (old, *others) if m is not None))
    fresh = sorted((new.oids() if new else set()) - known)
    sizes = [object_size(store, oid) for oid in fresh]
    return FileChange(
        path,
        d.count("added"),
        d.count("removed"),
        d.count("changed"),
        dict(sorted(kinds.items())),
        len(fresh),
        sum(s for s in sizes if s is not None),
        sum(1 for s in sizes if s is None),
        deleted=new is None,
    )


@dataclass
class _Raw:
    commit: str
    parents: list[str]
    date: str
    author: str
    subject: str
    changes: list[tuple[str, str, str]] = field(default_factory=list)  # old, new blob, path


def _raw_log(top: Path, rev: str, pathspecs: Sequence[str]) -> Iterator[_Raw]:
    """Commits of `git log REV -- PATHS`, each with the files it changed against its first
    parent, from one `git log --raw -z` (no process per commit)."""
    out = git.run(
        "log", "-z", "--format=%x01%H%x1f%P%x1f%ad%x1f%an%x1f%s", "--date=short", "--raw",
        "--no-abbrev", "--no-renames", "--diff-merges=first-parent", rev, "--", *pathspecs,
        cwd=top,
    ).decode("utf-8", "surrogateescape")  # fmt: skip
    current: _Raw | None = None
    tokens = iter(out.split("\0"))
    for token in tokens:
        token = token.lstrip("\n")
        if token.startswith("\x01"):
            if current is not None:
                yield current
            commit, parents, date, author, subject = token[1:].split("\x1f", 4)
            current = _Raw(commit, parents.split(), date, author, subject)
        elif token.startswith(":") and current is not None:
            meta = token[1:].split()
            path = next(tokens, "")
            if len(meta) >= 4:
                current.changes.append((meta[2], meta[3], path))
    if current is not None:
        yield current


def _read(reader: git.BlobReader, blob: str, path: str) -> Manifest | None:
    if set(blob) == {"0"}:
        return None
    got = reader.read(blob)
    if got is None or not manifest.is_manifest(got[1]):
        return None
    return manifest.parse(got[1], path)


def _read_at(reader: git.BlobReader, commit: str, path: str) -> Manifest | None:
    got = reader.read(f"{commit}:{path}")
    if got is None or got[0] != "blob" or not manifest.is_manifest(got[1]):
        return None
    return manifest.parse(got[1], path)


def log(
    store: Store,
    top: Path,
    rev: str = "HEAD",
    pathspecs: Sequence[str] = (),
    max_count: int | None = None,
) -> Iterator[CommitChange]:
    """Commits reachable from `rev` (newest first) that changed a tracked checkpoint."""
    if git.rev_parse(rev, cwd=top) is None:
        return
    shown = 0
    with git.BlobReader(top) as reader:
        for raw in _raw_log(top, rev, pathspecs):
            files = []
            for old_blob, new_blob, path in raw.changes:
                old, new = _read(reader, old_blob, path), _read(reader, new_blob, path)
                if old is None and new is None:
                    continue
                others = [_read_at(reader, p, path) for p in raw.parents[1:]]
                known = [m for m in others if m is not None]
                files.append(file_change(store, path, old, new, known))
            if files:
                yield CommitChange(raw.commit, raw.date, raw.author, raw.subject, tuple(files))
                shown += 1
                if max_count is not None and shown >= max_count:
                    return
