"""Path and `file://` remotes: objects go straight into the remote repository's own store.

A bare repository on a shared disk (common on clusters) needs no server: its store is
`<remote git dir>/theta/objects/...`, the same layout as a local one. Copies are verified
while they are written (the sha256 of the bytes must equal the oid) and published with an
atomic rename through the destination store, so readers on either side never see half an
object, and two pushers of the same object both succeed.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from git_theta import git
from git_theta.errors import GitThetaError, TransferError
from git_theta.store import Store
from git_theta.transfer import endpoint as endpoints
from git_theta.transfer.base import (
    Connection,
    ObjectRef,
    Progress,
    ProgressCounter,
    Remote,
    Transfer,
    TransferOptions,
    TransferStats,
    describe,
    local_path,
    no_progress,
)

CHUNK = 1 << 20


class LocalTransfer(Transfer):
    """A repository on a path or file:// URL with no LFS server configured for it."""

    name = "local"
    priority = 20

    def accepts(self, remote: Remote) -> bool:
        if local_path(remote.url, remote.repo) is None:
            return False
        return endpoints.configured_url(remote) is None

    def connect(self, remote: Remote, options: TransferOptions) -> Connection:
        return LocalConnection(remote, options)


def remote_store(remote: Remote) -> Store:
    """The store of the repository at the remote's path (bare or not)."""
    path = local_path(remote.url, remote.repo)
    if path is None or not path.is_dir():
        raise TransferError(
            f"remote {remote.label}: {path or remote.url} is not a directory",
            hint="check `git remote -v`",
        )
    try:
        common = git.foreign_common_dir(path)
    except GitThetaError:
        raise TransferError(f"remote {remote.label}: {path} is not a git repository") from None
    return Store(common / "theta")


def copy_verified(src: Path, dest: Store, oid: str, counter: ProgressCounter) -> int:
    """Copy the object file `src` into `dest` as `oid`; its bytes must hash to `oid`."""
    with dest.writer() as w, open(src, "rb") as f:
        while chunk := f.read(CHUNK):
            w.write(chunk)
            counter.add_bytes(len(chunk))
        # the writer hashes what it wrote and files it under that hash, so a corrupt
        # source can only ever land under its own (true) name, never under `oid`
        obj = w.commit()
    if obj.oid != oid:
        raise TransferError(f"object {oid[:12]} at {src} is corrupt (it hashes to {obj.oid[:12]})")
    return obj.size


class LocalConnection(Connection):
    def __init__(self, remote: Remote, options: TransferOptions) -> None:
        self.remote = remote
        self.options = options
        self._store: Store | None = None

    @property
    def far(self) -> Store:
        if self._store is None:
            self._store = remote_store(self.remote)
        return self._store

    def upload(
        self, store: Store, objects: Sequence[ObjectRef], progress: Progress = no_progress
    ) -> TransferStats:
        return self._copy(store, self.far, objects, progress, "upload")

    def download(
        self, store: Store, objects: Sequence[ObjectRef], progress: Progress = no_progress
    ) -> TransferStats:
        return self._copy(self.far, store, objects, progress, "download")

    def _copy(
        self, src: Store, dest: Store, objects: Sequence[ObjectRef], progress: Progress, verb: str
    ) -> TransferStats:
        stats = TransferStats()
        todo: list[ObjectRef] = []
        for o in sorted({o.oid: o for o in objects}.values(), key=lambda o: o.oid):
            if dest.has(o.oid):
                stats.skipped += 1
            else:
                todo.append(o)
        absent = [o.oid for o in todo if not src.has(o.oid)]
        if absent:
            where = "locally" if verb == "upload" else f"on remote {self.remote.label}"
            raise TransferError(
                f"cannot {verb} objects missing {where}: {describe(absent)}",
                hint="run `git theta fetch` from a remote that has them"
                if verb == "upload"
                else f"push them to {self.remote.label} from a clone that has them",
            )
        counter = ProgressCounter(todo, progress)
        lock = threading.Lock()
        failed: dict[str, str] = {}

        def one(ref: ObjectRef) -> None:
            try:
                n = copy_verified(src.path(ref.oid), dest, ref.oid, counter)
            except (GitThetaError, OSError) as exc:
                with lock:
                    failed[ref.oid] = str(exc)
                return
            counter.finish_object()
            with lock:
                stats.objects += 1
                stats.bytes += n

        if todo:
            with ThreadPoolExecutor(max_workers=min(4, len(todo))) as ex:
                list(ex.map(one, todo))
        if failed:
            oids = sorted(failed)
            raise TransferError(
                f"remote {self.remote.label}: could not {verb} {len(oids)} objects "
                f"({failed[oids[0]]}); objects: {describe(oids)}",
                hint="nothing partial was kept; check the path and its permissions",
            )
        return stats
