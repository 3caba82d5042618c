"""What `git push` (the pre-push hook), smudge, `git theta fetch/pull/push` move, and how.

Plain functions over an explicit repository, store and remote; cli.py feeds them and shows
their progress. Each opens one connection per command, so a whole push or checkout shares
one HTTP session and one set of credentials.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from git_theta import git, manifest
from git_theta.errors import GitThetaError
from git_theta.store import Store
from git_theta.transfer import base, walk
from git_theta.transfer.base import Connection, ObjectRef, Progress, Remote, TransferStats


@dataclass
class Outcome:
    """What a command moved, and manifests it had to skip."""

    stats: TransferStats = field(default_factory=TransferStats)
    objects: int = 0
    malformed: list[str] = field(default_factory=list)


def hook_remote(name_or_url: str, url: str, repo: Path) -> Remote:
    """The remote a pre-push hook was called for (`$1` is a name or the URL, `$2` the URL)."""
    names = git.remotes(cwd=repo)
    return Remote(name_or_url if name_or_url in names else None, url, repo)


def pre_push(remote: Remote, stdin: str, store: Store, progress: Progress) -> Outcome:
    """Upload what the pushed commits need and the remote lacks."""
    refs = walk.parse_pre_push(stdin)
    found = walk.manifests_in_history(
        walk.pushed_range(refs, remote.name, remote.repo), remote.repo
    )
    return _upload(remote, found, store, progress)


def push(remote: Remote, revs: Sequence[str], store: Store, progress: Progress) -> Outcome:
    """Upload the objects of every manifest in the whole history of `revs` that the remote
    lacks (the server is asked about each; use after a failed or skipped hook)."""
    found = walk.manifests_in_history(list(revs), remote.repo)
    return _upload(remote, found, store, progress)


def _upload(remote: Remote, found: walk.Found, store: Store, progress: Progress) -> Outcome:
    objects = found.objects()
    out = Outcome(objects=len(objects), malformed=found.malformed)
    if not objects:
        return out
    conn = base.connect(remote)
    try:
        out.stats = conn.upload(store, objects, progress)
    finally:
        conn.close()
    return out


def fetch(remote: Remote, revs: Sequence[str], store: Store, progress: Progress) -> Outcome:
    """Download every object the checkpoints in the trees of `revs` need."""
    found = walk.manifests_in_trees(revs, remote.repo)
    objects = found.objects()
    out = Outcome(objects=len(objects), malformed=found.malformed)
    missing = [o for o in objects if not store.has(o.oid)]
    out.stats.skipped = len(objects) - len(missing)
    if missing:
        conn = base.connect(remote)
        try:
            got = conn.download(store, missing, progress)
        finally:
            conn.close()
        out.stats.objects, out.stats.bytes = got.objects, got.bytes
    return out


def materialize(repo: Path) -> list[str]:
    """Check out again, through git and its filters, every working-tree file that still
    holds its staged manifest (a skipped smudge); the paths. Files the user changed are
    left alone. git re-records their stat data, so `git status` stays quiet."""
    todo = []
    for rel in git.ls_files(cwd=repo):
        path = repo / rel
        try:
            with open(path, "rb") as f:
                head = f.read(len(manifest.MAGIC))
        except OSError:
            continue
        if not manifest.is_manifest(head):
            continue
        if git.show_blob(":" + rel, cwd=repo) != path.read_bytes():
            continue  # not the staged version: the user's business
        todo.append(rel)
    for rel in todo:
        (repo / rel).unlink()  # else git sees an unchanged file and writes nothing
    git.checkout_paths(todo, cwd=repo)
    return todo


class SmudgeFetcher:
    """The `fetch` callback of filters.smudge: downloads a checkpoint's missing objects in
    one batch. Connects on first use and keeps the connection for the whole git command."""

    def __init__(self, repo: Path | None = None, progress: Progress = base.no_progress) -> None:
        self.repo = repo
        self.progress = progress
        self._conn: Connection | None = None
        self._remote: Remote | None = None

    def __call__(self, store: Store, oids: Sequence[str], path: str | None, data: bytes) -> None:
        m = manifest.parse(data, path)
        sizes = {r.oid: r.size for r in walk.manifest_objects(m)}
        refs = [ObjectRef(oid, sizes.get(oid)) for oid in oids]
        if self._conn is None:
            try:
                self.repo = self.repo or git.toplevel()
                self._remote = base.resolve_remote(None, self.repo)
            except GitThetaError:
                return  # no remote to ask: smudge reports the missing objects itself
            self._conn = base.connect(self._remote)
        self._conn.download(store, refs, self.progress)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
