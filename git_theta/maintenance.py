"""Store upkeep: `gc` (drop what nothing reachable needs) and `fsck` (verify everything).

Both start from `reachability.live_manifests()`: every manifest any ref, reflog, stash,
in-progress operation or index stage reaches, and from each manifest every object its
records name, nested bases included (`Manifest.oids()`), so no object a chain still needs is
ever removed or left unchecked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from git_theta import codec, filters, reachability
from git_theta.errors import GitThetaError
from git_theta.manifest import Entry
from git_theta.reachability import FoundManifest
from git_theta.store import OID_RE, Store
from git_theta.updates.base import ValueSpec, record_oids

TMP_MAX_AGE = 3600.0  # seconds: older files under theta/tmp belong to no running command
DEFAULT_GRACE = 3600.0  # seconds: younger objects may belong to a `git add` still running


# -- gc ----------------------------------------------------------------------------------------


@dataclass
class GcReport:
    manifests: int = 0
    kept: int = 0
    kept_bytes: int = 0
    removed: int = 0
    removed_bytes: int = 0
    recent: int = 0  # unreferenced but younger than the grace period: kept
    tmp_removed: int = 0
    tmp_bytes: int = 0
    rawmap_pruned: int = 0
    removed_oids: list[str] = field(default_factory=list)


def live_oids(found: Iterable[FoundManifest]) -> tuple[set[str], int]:
    """Every object the manifests need, and how many manifests there were.

    A malformed manifest stops everything: what it needs cannot be known, so nothing may go.
    """
    live: set[str] = set()
    n = 0
    for f in found:
        if f.manifest is None:
            raise GitThetaError(
                f"{f.path} (blob {f.blob[:12]}) is not a readable manifest: {f.error}",
                hint="gc removes nothing while it cannot tell what a manifest needs; "
                "fix that commit or upgrade git-theta",
            )
        live |= f.manifest.oids()
        n += 1
    return live, n


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


def gc(
    store: Store,
    cwd: str | Path | None = None,
    *,
    dry_run: bool = False,
    grace: float = DEFAULT_GRACE,
    now: float | None = None,
) -> GcReport:
    """Remove objects no live manifest needs (older than `grace` seconds), stale temp files,
    and rawmap lines that point at removed objects."""
    now = time.time() if now is None else now
    live, n = live_oids(reachability.live_manifests(cwd))
    rep = GcReport(manifests=n)
    for oid in store.iter_oids():
        p = store.path(oid)
        size = _size(p)
        if oid in live:
            rep.kept += 1
            rep.kept_bytes += size
            continue
        try:
            young = now - p.stat().st_mtime < grace
        except OSError:
            continue
        if young:
            rep.recent += 1
            continue
        rep.removed += 1
        rep.removed_bytes += size
        rep.removed_oids.append(oid)
        if not dry_run:
            p.unlink(missing_ok=True)
            for d in (p.parent, p.parent.parent):
                try:
                    d.rmdir()
                except OSError:
                    break
    _clean_tmp(store, rep, now, dry_run)
    rep.rawmap_pruned = prune_rawmap(store, dry_run=dry_run)
    return rep


def _clean_tmp(store: Store, rep: GcReport, now: float, dry_run: bool) -> None:
    if not store.tmp.is_dir():
        return
    for p in store.tmp.iterdir():
        try:
            st = p.lstat()
        except OSError:
            continue
        if now - st.st_mtime < TMP_MAX_AGE:
            continue
        rep.tmp_removed += 1
        if p.is_dir():
            rep.tmp_bytes += sum(_size(q) for q in p.rglob("*") if q.is_file())
            if not dry_run:
                shutil.rmtree(p, ignore_errors=True)
        else:
            rep.tmp_bytes += st.st_size
            if not dry_run:
                p.unlink(missing_ok=True)


def prune_rawmap(store: Store, *, dry_run: bool = False) -> int:
    """Drop rawmap lines whose object is gone; returns how many lines that was."""
    if not store.rawmap.is_dir():
        return 0
    pruned = 0
    for p in sorted(store.rawmap.rglob("*")):
        if not p.is_file():
            continue
        try:
            lines = p.read_text().splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        keep = [
            ln
            for ln in lines
            if len(parts := ln.split()) == 3 and OID_RE.match(parts[1]) and store.has(parts[1])
        ]
        if len(keep) == len(lines):
            continue
        pruned += len(lines) - len(keep)
        if dry_run:
            continue
        if keep:
            tmp = p.with_name(p.name + ".tmp")
            tmp.write_text("\n".join(keep) + "\n")
            os.replace(tmp, p)
        else:
            p.unlink(missing_ok=True)
    return pruned


# -- fsck --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """Something wrong: `path`/`param` say where (None for a bare object)."""

    oid: str | None
    detail: str
    path: str | None = None
    param: str | None = None
    blob: str | None = None

    def render(self) -> str:
        where = []
        if self.path:
            where.append(self.path + (f" (blob {self.blob[:10]})" if self.blob else ""))
        if self.param:
            where.append(f"parameter {self.param}")
        if self.oid:
            where.append(f"object {self.oid[:12]}")
        return ": ".join(where) + f": {self.detail}"


@dataclass
class FsckReport:
    objects: int = 0
    manifests: int = 0
    values: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_object(store: Store, oid: str) -> str | None:
    """None when object `oid` hashes to its name and decodes; else what is wrong."""
    try:
        f = open(store.path(oid), "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        return "missing"
    with f:
        size = os.fstat(f.fileno()).st_size
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        view = memoryview(mapped if mapped is not None else b"")
        try:
            actual = hashlib.sha256(view).hexdigest()
            if actual != oid:
                return f"corrupt: content hashes to {actual[:12]}"
            for _ in codec.Decoder(view):
                pass
        except codec.CodecError as exc:
            return f"corrupt: does not decode ({exc})"
        finally:
            with contextlib.suppress(BufferError):
                view.release()
                if mapped is not None:
                    mapped.close()
    return None


Progress = Callable[[str], None]


def _no_progress(message: str) -> None:
    pass


def fsck(
    store: Store,
    cwd: str | Path | None = None,
    *,
    values: bool = True,
    progress: Progress = _no_progress,
) -> FsckReport:
    """Verify every object of the store, then every live manifest: each object it needs is
    present and sound, and (with `values`) each value rebuilds to its manifest hash."""
    rep = FsckReport()
    bad: dict[str, str] = {}
    for oid in store.iter_oids():
        rep.objects += 1
        problem = check_object(store, oid)
        if problem is not None:
            bad[oid] = problem
    progress(f"checked {rep.objects} objects")
    reported: set[str] = set()
    checked: set[tuple[str, str]] = set()
    for found in reachability.live_manifests(cwd):
        rep.manifests += 1
        for pr in _check_manifest(store, found, bad, checked if values else None):
            rep.problems.append(pr)
            if pr.oid:
                reported.add(pr.oid)
    rep.values = len(checked)
    for oid, detail in sorted(bad.items()):
        if oid not in reported:
            rep.problems.append(Problem(oid, detail + " (not referenced by any live manifest)"))
    return rep


def _check_manifest(
    store: Store, found: FoundManifest, bad: dict[str, str], checked: set[tuple[str, str]] | None
) -> list[Problem]:
    """Problems of one manifest; values not yet in `checked` are rebuilt (None: none are)."""
    if found.manifest is None:
        return [Problem(None, f"malformed manifest: {found.error}", found.path, blob=found.blob)]
    m = found.manifest
    out: list[Problem] = []

    def problem(oid: str | None, detail: str, param: str | None) -> None:
        out.append(Problem(oid, detail, found.path, param, found.blob))

    skel = m.skeleton_oid
    if not store.has(skel):
        problem(skel, "missing (skeleton)", None)
    elif skel in bad:
        problem(skel, bad[skel] + " (skeleton)", None)
    for e in m.entries:
        needed = set(record_oids(e.record))
        for extra in e.extra.values():
            needed |= record_oids(extra)
        broken = False
        for oid in sorted(needed):
            if not store.has(oid):
                problem(oid, "missing", e.name)
                broken = True
            elif oid in bad:
                problem(oid, bad[oid], e.name)
                broken = True
        key = (e.hash, json.dumps(e.record, sort_keys=True))
        if checked is not None and not broken and key not in checked:
            checked.add(key)
            detail = check_value(store, e, found.path)
            if detail is not None:
                problem(None, detail, e.name)
    return out


def check_value(store: Store, e: Entry, path: str) -> str | None:
    """None when the value of `e` rebuilds to its manifest hash and length; else the problem."""
    import blake3

    h = blake3.blake3()
    n = 0
    try:
        for chunk in filters.rebuild(store, e.record, ValueSpec(e.name, e.dtype, e.shape, path)):
            h.update(chunk)
            n += len(chunk)
    except GitThetaError as exc:
        return f"does not rebuild: {exc}"
    if n != e.nbytes:
        return f"rebuilds to {n} bytes, manifest says {e.nbytes}"
    if "blake3:" + h.hexdigest() != e.hash:
        return "rebuilds to a value whose hash differs from the manifest"
    return None
