"""Direct checkout: large checkpoints are written to the working tree by git-theta itself.

git keeps a smudge filter's whole output in memory before writing the file (convert.c reads
the reply into one buffer), so a 14 GB checkpoint would cost git 14 GB of RAM. Above a size
threshold the filter process therefore hands git the manifest text, remembers the path, and
when git closes the filter (git waits for its filters at exit, after it has written the
working tree and the index) writes the real checkpoint next to the file and renames it into
place, streaming, then refreshes the index so `git status` stays clean. `git theta checkout`
does the same by hand for any tracked file whose working-tree content is still a manifest.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from git_theta import filters, git, manifest
from git_theta.filters import Progress
from git_theta.store import Store

# (store, oids, path, manifest text): downloads what a checkpoint lacks (transfer/sync.py)
Fetcher = Callable[[Store, Sequence[str], "str | None", bytes], None]

DEFAULT_THRESHOLD = 256 << 20
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
    for item in pending:
        p = Path(item.path)
        try:
            if p.stat().st_size != len(item.manifest_text) or p.read_bytes() != item.manifest_text:
                continue
        except OSError:
            continue
        write_checkpoint(p, item.manifest_text, store, progress=progress, fetch=fetch)
        done.append(item.path)
    if done:
        refresh_index(done)
    return done


def refresh_index(paths: list[str]) -> None:
    """Record the new files' stat data so that `git status` knows them unchanged.

    git trusts a size mismatch between index and file as "modified" without reading the
    file, unless the index holds no stat data for the entry (read-cache.c, ie_modified).
    Re-adding each entry with --cacheinfo (same mode and blob) clears its stat data; the
    refresh then cleans the file once, every parameter's indexed entry is reused, nothing is
    stored, and the real stat data is recorded.
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
    git.run("update-index", "-q", "--refresh", check=False)


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
