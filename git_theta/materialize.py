"""Direct checkout: large checkpoints are written to the working tree by git-theta itself.

git keeps a smudge filter's whole output in memory before writing the file (convert.c reads
the reply into one buffer), so a 14 GB checkpoint would cost git 14 GB of RAM. Above a size
threshold the filter process therefore hands git the manifest text, remembers the path, and
when git closes the filter (git waits for its filters at exit, after it has written the
working tree and the index) writes the real checkpoint next to the file and renames it into
place, streaming, then refreshes the index so `git status` stays clean. git's refresh runs
the clean filter over every file it re-reads; for the files just written that clean is
answered from a record of what was written (`clean_fresh`), not by re-hashing the file.
`git theta checkout` does the same by hand for any tracked file whose working-tree content
is still a manifest.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
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

DEFAULT_THRESHOLD = 256 << 20
# names the record of files just written, for the filter process of the index refresh
FRESH_ENV = "GIT_THETA_FRESH"
_SIZE_RE = re.compile(r"^(\d+)\s*([kmgt]?)i?b?$", re.IGNORECASE)


def threshold() -> int | None:
    """Checkpoints larger than this many bytes are checked out directly; None: never.

    From `GIT_THETA_DIRECT_CHECKOUT` or `git config theta.directCheckout`: a size such as
    `512m` or `2g`, `always`, or `never`. Default 256 MiB, which keeps git's own buffer of a
    smudged file under the memory bound of the design whatever the checkpoint's size.
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
    path: str
    manifest_text: bytes


def write_checkpoint(
    path: Path,
    manifest_text: bytes,
    store: Store,
    *,
    progress: Progress | None = None,
    fetch: Fetcher | None = None,
) -> None:
    """Replace `path` (holding `manifest_text`) by the checkpoint, atomically.

    The temporary file lives in the store's tmp dir when that is on the same filesystem, so
    a killed checkout leaves no stray file in the working tree (`git theta gc` clears tmp).
    """
    store.tmp.mkdir(parents=True, exist_ok=True)
    same_fs = os.stat(store.tmp).st_dev == os.stat(path.parent).st_dev
    where = store.tmp if same_fs else path.parent
    fd, tmp = tempfile.mkstemp(dir=where, prefix=f".{path.name}.", suffix=".theta-tmp")
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as out:
            kwargs = {"progress": progress} if progress is not None else {}
            get = None
            if fetch is not None:
                get = lambda st, oids, p: fetch(st, oids, p, manifest_text)  # noqa: E731
            filters.smudge(manifest_text, str(path), store, out, fetch=get, **kwargs)
        with contextlib.suppress(OSError):
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def finish(
    pending: Iterable[Pending],
    store: Store,
    *,
    progress: Progress | None = None,
    fetch: Fetcher | None = None,
) -> list[str]:
    """Write every pending checkpoint whose file still holds the manifest git wrote.

    Returns the paths written. A file that changed meanwhile (or that git never wrote, e.g.
    a smudge for `git archive`) is left alone.
    """
    done = []
    fresh: dict[str, Fresh] = {}
    for item in pending:
        p = Path(item.path)
        try:
            if p.stat().st_size != len(item.manifest_text) or p.read_bytes() != item.manifest_text:
                continue
        except OSError:
            continue
        write_checkpoint(p, item.manifest_text, store, progress=progress, fetch=fetch)
        done.append(item.path)
        with contextlib.suppress(OSError):
            fresh[os.path.abspath(p)] = Fresh(stat_key(p.stat()), item.manifest_text)
    if done:
        refresh_index(done, store=store, fresh=fresh)
    return done


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
    """Record the new files' stat data so that `git status` knows them unchanged.

    git trusts a size mismatch between index and file as "modified" without reading the
    file, unless the index holds no stat data for the entry (read-cache.c, ie_modified).
    Re-adding each entry with --cacheinfo (same mode and blob) clears its stat data; the
    refresh then cleans the file once, every parameter's indexed entry is reused, nothing is
    stored, and the real stat data is recorded. With `fresh` (files written by this process)
    the refresh's filter answers those files from the record instead (`clean_fresh`).
    """
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


@contextlib.contextmanager
def _fresh_record(store: Store | None, fresh: dict[str, Fresh] | None) -> Iterator[dict[str, str]]:
    """The environment naming a record of `fresh` (a file in the store's tmp dir, removed
    afterwards); empty when there is nothing to record or it cannot be written."""
    if not fresh or store is None:
        yield {}
        return
    record = {p: {"stat": f.stat, "manifest": f.manifest_text.decode()} for p, f in fresh.items()}
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
