"""Direct checkout: large checkpoints are written to the working tree by git-theta itself.

git keeps a smudge filter's whole output in memory before writing the file (convert.c reads
the reply into one buffer), so a 14 GB checkpoint would cost git 14 GB of RAM, and every
byte is copied through the pipe and git's buffer. Above a size threshold the filter process
therefore writes the checkpoint to a temporary file while git waits for the smudge (so an
error fails git's command as usual), hands git the manifest text, and when git closes the
filter (git waits for its filters at exit, after it has written the working tree and the
index) renames the file into place and records its stat data in the index
(index_stat.py), so `git status` stays clean without re-reading it. If the index cannot be
patched, git's refresh runs the clean filter over the file; that clean is answered from a
record of what was written (`clean_fresh`), not by re-hashing the file. `git theta
checkout` does the same by hand for any tracked file whose working-tree content is still a
manifest.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from git_theta import filters, git, manifest
from git_theta.errors import GitThetaError
from git_theta.filters import Progress
from git_theta.store import Store
from git_theta.streams import ByteSource

# (store, oids, path, manifest text): downloads what a checkpoint lacks (transfer/sync.py)
Fetcher = Callable[[Store, Sequence[str], "str | None", bytes], None]

DEFAULT_THRESHOLD = 64 << 20
# names the record of files just written, for the filter process of the index refresh
FRESH_ENV = "GIT_THETA_FRESH"
_SIZE_RE = re.compile(r"^(\d+)\s*([kmgt]?)i?b?$", re.IGNORECASE)


def threshold() -> int | None:
    """Checkpoints larger than this many bytes are checked out directly; None: never.

    From `GIT_THETA_DIRECT_CHECKOUT` or `git config theta.directCheckout`: a size such as
    `512m` or `2g`, `always`, or `never`. Default 64 MiB: above it writing the file here is
    faster than through git's buffer (measured on a 91 MB checkpoint), and git's buffer of a
    smudged file stays under the memory bound of the design whatever the checkpoint's size.
    """
    value = os.environ.get("GIT_THETA_DIRECT_CHECKOUT") or git.config_get("theta.directCheckout")
    if not value:
        return DEFAULT_THRESHOLD
    value = value.strip().lower()
    if value == "never":
        return None
    if value == "always":
        return 0
    m = _SIZE_RE.match(value)
    if not m:
        return DEFAULT_THRESHOLD
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}[m.group(2).lower()]


def checkpoint_size(m: manifest.Manifest) -> int:
    return m.skeleton_size + sum(e.nbytes for e in m.entries)


@dataclass(frozen=True)
class Pending:
    """A checkpoint to put in place of the manifest git wrote at `path`: already written to
    `tmp` (the filter process, during git's smudge request), or to write now (`tmp` None)."""

    path: str
    manifest_text: bytes
    tmp: Path | None = None


def write_temp(
    path: Path,
    manifest_text: bytes,
    store: Store,
    *,
    progress: Progress | None = None,
    fetch: Fetcher | None = None,
    name: str | None = None,
) -> Path:
    """Write the checkpoint `manifest_text` describes, for `path`, to a new temporary file;
    its path. `name` is the checkpoint's name in messages (default: `path`).

    The file lives in the store's tmp dir when that is on the working tree's filesystem (so
    a killed checkout leaves no stray file in the working tree: `git theta gc` clears tmp),
    else next to `path`. Nothing is left behind if the checkpoint cannot be written.
    """
    store.tmp.mkdir(parents=True, exist_ok=True)
    near = path.parent if path.parent.is_dir() else Path.cwd()
    same_fs = os.stat(store.tmp).st_dev == os.stat(near).st_dev
    where = store.tmp if same_fs else near
    fd, tmp = tempfile.mkstemp(dir=where, prefix=f".{path.name}.", suffix=".theta-tmp")
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as out:
            kwargs = {"progress": progress} if progress is not None else {}
            get = None
            if fetch is not None:
                get = lambda st, oids, p: fetch(st, oids, p, manifest_text)  # noqa: E731
            filters.smudge(manifest_text, name or str(path), store, out, fetch=get, **kwargs)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return Path(tmp)


def place(tmp: Path, path: Path, *, atomic: bool = True) -> None:
    """Move the written checkpoint `tmp` over `path`, keeping the file's mode (atomic on
    one filesystem; copied across filesystems).

    `atomic=False` removes `path` first, for a `path` that holds only what can be written
    again (the manifest git just checked out): renaming over an existing file makes ext4
    (`auto_da_alloc`) allocate every block of the new file inside the rename, 175-187 ms for
    498 MB measured here, while a rename to a free name returns at once.
    """
    with contextlib.suppress(OSError):
        os.chmod(tmp, os.stat(path).st_mode & 0o7777)
    if not atomic:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    try:
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.move(tmp, path)


def write_checkpoint(
    path: Path,
    manifest_text: bytes,
    store: Store,
    *,
    progress: Progress | None = None,
    fetch: Fetcher | None = None,
    name: str | None = None,
) -> None:
    """Write the checkpoint `manifest_text` describes to `path` (replacing what is there,
    keeping its mode), atomically; `name` as for write_temp."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = write_temp(path, manifest_text, store, progress=progress, fetch=fetch, name=name)
    try:
        place(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def discard(pending: Iterable[Pending]) -> None:
    """Remove the temporary files of checkpoints that were not put in place."""
    for item in pending:
        if item.tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(item.tmp)


def _holds(path: Path, manifest_text: bytes) -> bool:
    try:
        return path.stat().st_size == len(manifest_text) and path.read_bytes() == manifest_text
    except OSError:
        return False


def finish(
    pending: Iterable[Pending],
    store: Store,
    *,
    progress: Progress | None = None,
    fetch: Fetcher | None = None,
) -> list[str]:
    """Put every pending checkpoint in place whose file still holds the manifest git wrote,
    then record the files in the index. Returns the paths written.

    A file that changed meanwhile (or that git never wrote, e.g. a smudge for `git
    archive`) is left alone, and its temporary file removed.
    """
    done = []
    fresh: dict[str, Fresh] = {}
    items = list(pending)
    try:
        for item in items:
            p = Path(item.path)
            if not _holds(p, item.manifest_text):
                continue
            if item.tmp is None:
                write_checkpoint(p, item.manifest_text, store, progress=progress, fetch=fetch)
            else:
                place(item.tmp, p, atomic=False)  # p holds git's manifest: nothing lost
            done.append(item.path)
            with contextlib.suppress(OSError):
                fresh[item.path] = Fresh(stat_key(backdate(p)), item.manifest_text)
    finally:
        discard(items)
    if done:
        refresh_index(done, store=store, fresh=fresh)
    return done


def backdate(path: Path) -> os.stat_result:
    """Set the mtime of a file just written one second back; its stat data then.

    git (built without nanosecond timestamps) re-reads a file whose mtime falls in the same
    second as the index's, in case it changed after being indexed; for a checkpoint that is
    a whole re-hash on the next `git status`. A second back, the index written now is later.
    """
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - 1_000_000_000))
    return path.stat()


@dataclass(frozen=True)
class Fresh:
    """A file git-theta has just written: its stat data then, and the manifest it holds."""

    stat: list[int]
    manifest_text: bytes


def stat_key(st: os.stat_result) -> list[int]:
    """What changes when a file's content does (ctime changes on any write, even one that
    keeps size and mtime), so an equal key means the bytes written are still there."""
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def refresh_index(
    paths: list[str], *, store: Store | None = None, fresh: dict[str, Fresh] | None = None
) -> None:
    """Record the files' stat data in the index so that `git status` knows them unchanged.

    Files in `fresh` (written by this process, paths relative to the top level, the
    current directory) get theirs written into the index directly (index_stat.py). For the
    rest, or if the index cannot be patched, git refreshes: git trusts a size mismatch
    between index and file as "modified" without reading the file, unless the index holds
    no stat data for the entry (read-cache.c, ie_modified), so each entry is re-added with
    --cacheinfo (same mode and blob) to clear its stat data; the refresh then cleans the
    file once (answered from the `fresh` record by `clean_fresh`, or by re-hashing it).
    """
    if fresh:
        recorded = _record_in_index(fresh)
        paths = [p for p in paths if p not in recorded]
        if not paths:
            return
    args: list[str] = []
    listing = git.run("ls-files", "-s", "-z", "--", *paths).split(b"\0")
    stages: dict[str, list[tuple[str, str, str]]] = {}
    for item in listing:
        if not item:
            continue
        meta, _, name = item.decode().partition("\t")
        mode, oid, stage = meta.split()
        stages.setdefault(name, []).append((mode, oid, stage))
    for name, entries in stages.items():
        if len(entries) == 1 and entries[0][2] == "0":  # leave conflicted paths alone
            mode, oid, _ = entries[0]
            args += ["--cacheinfo", f"{mode},{oid},{name}"]
    if args:
        git.run("update-index", *args, check=False)
    with _fresh_record(store, fresh) as env:
        git.run("update-index", "-q", "--refresh", check=False, env=env)


def _record_in_index(fresh: dict[str, Fresh]) -> set[str]:
    """The paths of `fresh` whose stat data went into the index (those still as written)."""
    from git_theta import index_stat

    try:
        index, algorithm = index_stat.repo_layout()
    except (GitThetaError, ValueError):
        return set()
    written = {}
    for path, f in fresh.items():
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat_key(st) == f.stat:
            written[path] = index_stat.Written(st, index_stat.blob_id(f.manifest_text, algorithm))
    return index_stat.patch(written, index=index, algorithm=algorithm)


@contextlib.contextmanager
def _fresh_record(store: Store | None, fresh: dict[str, Fresh] | None) -> Iterator[dict[str, str]]:
    """The environment naming a record of `fresh` (a file in the store's tmp dir, removed
    afterwards); empty when there is nothing to record or it cannot be written."""
    if not fresh or store is None:
        yield {}
        return
    record = {
        os.path.abspath(p): {"stat": f.stat, "manifest": f.manifest_text.decode()}
        for p, f in fresh.items()
    }
    try:
        store.tmp.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=store.tmp, prefix="fresh-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
    except OSError:
        yield {}  # the refresh then re-hashes the files: slower, same result
        return
    try:
        yield {FRESH_ENV: name}
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)


@cache
def _fresh_files() -> dict[str, Fresh]:
    name = os.environ.get(FRESH_ENV)
    if not name:
        return {}
    try:
        with open(name) as f:
            record = json.load(f)
        return {
            str(p): Fresh([int(x) for x in v["stat"]], str(v["manifest"]).encode())
            for p, v in record.items()
        }
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}  # unreadable: every file is cleaned the ordinary way


def clean_fresh(src: ByteSource, path: str | None) -> bytes | None:
    """The manifest of `path` if git-theta wrote it in this very checkout and it is still
    exactly as written (same stat key); git's content on `src` is then drained unread.
    None otherwise: the caller cleans the content as usual."""
    if not path:
        return None
    f = _fresh_files().get(os.path.abspath(path))
    if f is None:
        return None
    try:
        if stat_key(os.stat(path)) != f.stat:
            return None
    except OSError:
        return None
    try:
        manifest.parse(f.manifest_text, path)
    except GitThetaError:
        return None
    src.drain()
    return f.manifest_text


def manifests_in_worktree(paths: Iterable[str]) -> list[Pending]:
    """Tracked files whose working-tree content is a manifest (not yet checked out)."""
    out = []
    for path in paths:
        p = Path(path)
        try:
            if p.stat().st_size > filters.MAX_MANIFEST:
                continue
            with open(p, "rb") as f:
                if not manifest.is_manifest(f.read(len(manifest.MAGIC))):
                    continue
            out.append(Pending(path, p.read_bytes()))
        except OSError:
            continue
    return out
