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
    """Downloads for smudge. As a `filter_process.Delayer` it batches a whole git command:
    files with missing objects are delayed, and every pending object is fetched in one
    parallel transfer when git collects the delayed files. Called as filters.smudge's
    `fetch` callback, it fetches one file's missing objects (git commands that cannot
    delay, single-shot smudge). One connection serves the whole git command."""

    def __init__(
        self, store: Store, repo: Path | None = None, progress: Progress = base.no_progress
    ) -> None:
        self.store = store
        self.repo = repo
        self.progress = progress
        self._conn: Connection | None = None
        self._remote: Remote | None = None
        self._no_remote = False
        self._pending: dict[str, ObjectRef] = {}
        self._failure: GitThetaError | None = None

    def _connection(self) -> Connection | None:
        if self._conn is None and not self._no_remote:
            try:
                self.repo = self.repo or git.toplevel()
                self._remote = base.resolve_remote(None, self.repo)
            except GitThetaError:
                self._no_remote = True  # nothing to ask: smudge reports what is missing
                return None
            self._conn = base.connect(self._remote)
        return self._conn

    def defer(self, data: bytes, path: str) -> bool:
        if not manifest.is_manifest(data):
            return False
        try:
            m = manifest.parse(data, path)
        except GitThetaError:
            return False  # the smudge itself reports the bad manifest
        missing = [r for r in walk.manifest_objects(m) if not self.store.has(r.oid)]
        if not missing or self._connection() is None:
            return False
        for r in missing:
            if r.oid not in self._pending or self._pending[r.oid].size is None:
                self._pending[r.oid] = r
        return True

    def fetch_pending(self) -> None:
        refs = sorted(self._pending.values(), key=lambda r: r.oid)
        self._pending.clear()
        conn = self._connection()
        if not refs or conn is None:
            return
        try:
            conn.download(self.store, refs, self.progress)
        except GitThetaError as exc:
            self._failure = exc  # every delayed file then fails with this, not a retry each
            raise

    def __call__(self, store: Store, oids: Sequence[str], path: str | None, data: bytes) -> None:
        if self._failure is not None:
            raise self._failure
        m = manifest.parse(data, path)
        sizes = {r.oid: r.size for r in walk.manifest_objects(m)}
        conn = self._connection()
        if conn is not None:
            conn.download(store, [ObjectRef(oid, sizes.get(oid)) for oid in oids], self.progress)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
