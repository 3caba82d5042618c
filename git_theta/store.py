"""The content-addressed object store under the repository's common git dir.

Objects live at `<git-common-dir>/theta/objects/ab/cdef...` where `abcdef...` is the sha256
of the stored bytes, so every object is also a valid Git LFS object. Objects are written
once, through a temporary file in the same filesystem and `os.replace`, so a reader never
sees half an object, and concurrent writers of the same object both succeed. Reads verify
the hash before anything decoded from the bytes is trusted.

A second small map, `theta/rawmap/`, remembers which object holds the encoding of a given
raw value (by its blake3 hash), so that an unchanged parameter is neither re-encoded nor
re-stored on the next `git add`.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from git_theta.errors import ObjectCorruptError, ObjectMissingError, StoreWriteError

OID_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class StoredObject:
    oid: str
    size: int


def check_oid(oid: str) -> str:
    """`oid` if it is 64 lowercase hex digits; a hostile manifest cannot reach other paths."""
    if not OID_RE.match(oid):
        raise ValueError(f"invalid object id {oid!r}")
    return oid


SPOOL = 8 << 20  # bytes an ObjectWriter keeps in memory before it makes a temporary file


class ObjectWriter:
    """Streams bytes into a temporary file while hashing; `commit()` publishes the object.

    The first SPOOL bytes are kept in memory and the file is made only when more come or at
    `commit()`: clean writes several candidate encodings of a changed tensor and keeps the
    smallest, and a candidate that loses (or an object the store already has) then never
    touches the disk. Creating and deleting a file costs ~1 ms of kernel time on an ext4
    that has seen many deletions (measured: 111 temporary files, 12% of the CPU of adding a
    10%-changed 249 MB checkpoint).
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._done = False
        self._spool: bytearray | None = bytearray()
        self._file: BinaryIO | None = None
        self._path: Path | None = None
        self._hash = hashlib.sha256()
        self.size = 0

    def _spill(self) -> BinaryIO:
        """The temporary file, made now if it does not exist yet, holding what was spooled."""
        if self._file is not None:
            return self._file
        store = self._store
        try:
            store.tmp.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=store.tmp, prefix="obj-")
        except OSError as exc:
            self._done = True
            raise StoreWriteError(str(store.tmp), exc) from None
        self._path = Path(name)
        self._file = os.fdopen(fd, "wb", buffering=1 << 20)
        spooled, self._spool = self._spool, None
        if spooled:
            self._write_file(spooled)
        return self._file

    def _write_file(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self._spill().write(data)
        except OSError as exc:
            self.abort()
            raise StoreWriteError(str(self._store.root), exc) from None

    def write(self, data: bytes | memoryview) -> None:
        self._hash.update(data)
        if self._spool is not None and len(self._spool) + len(data) <= SPOOL:
            self._spool += data
        else:
            self._write_file(data)
        self.size += len(data)

    def digest(self) -> str:
        """The object id of what was written so far (what `commit` would publish)."""
        return self._hash.copy().hexdigest()

    def commit(self) -> StoredObject:
        oid = self._hash.hexdigest()
        if self._store.has(oid):
            self.abort()
            return StoredObject(oid, self.size)
        f = self._spill()
        try:
            f.close()
        except OSError as exc:
            self.abort()
            raise StoreWriteError(str(self._store.root), exc) from None
        self._done = True
        assert self._path is not None
        staged = self._store.staged
        if staged is not None:
            # made ready for publishing now, on the thread that wrote it, so that publishing
            # a transaction is one rename per object
            try:
                self._store.prepare(oid, self._path)
            except StoreWriteError:
                self._path.unlink(missing_ok=True)
                raise
            # two threads may store one value at once (clean stores small values on the pool)
            if staged.setdefault(oid, self._path) != self._path:
                with contextlib.suppress(FileNotFoundError):
                    self._path.unlink()
        else:
            self._store.publish(oid, self._path)
        return StoredObject(oid, self.size)

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self._spool = None
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.close()
            if self._path is not None:
                with contextlib.suppress(FileNotFoundError):
                    self._path.unlink()


class Mapped:
    """An object file mapped read-only (empty files get an empty view)."""

    def __init__(self, f: BinaryIO) -> None:
        self.file = f
        size = os.fstat(f.fileno()).st_size
        self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        self.view = memoryview(self.map) if self.map is not None else memoryview(b"")

    def release(self, end: int) -> None:
        """Drop the pages of bytes [0, end) from this process's resident memory.

        They stay in the page cache and fault back in if read again, so this is only a hint:
        a reader that has consumed the start of a large object stops holding it in RSS.
        """
        end -= end % mmap.PAGESIZE
        if self.map is not None and end > 0:
            with contextlib.suppress(OSError, ValueError):
                self.map.madvise(mmap.MADV_DONTNEED, 0, end)

    def close(self) -> None:
        # decoders may still hold slices of the map; it then closes when collected
        with contextlib.suppress(BufferError):
            self.view.release()
            if self.map is not None:
                self.map.close()
        self.file.close()


@contextlib.contextmanager
def _naming(oid: str, param: str | None, path: str | None) -> Iterator[None]:
    """Missing / corrupt object errors raised inside, again with the parameter and file."""
    try:
        yield
    except ObjectMissingError:
        raise ObjectMissingError(oid, param=param, path=path) from None
    except ObjectCorruptError as exc:
        raise ObjectCorruptError(oid, exc.reason, param=param, path=path) from None


class Store:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.rawmap = self.root / "rawmap"
        self.tmp = self.root / "tmp"
        # inside transaction(): objects written but not yet published, and rawmap lines
        self.staged: dict[str, Path] | None = None
        self._staged_map: list[tuple[str, str, StoredObject]] = []
        self._objects_dir = str(self.objects)
        self._hash_reads = True  # see reads_checked_by_value

    def path(self, oid: str) -> Path:
        check_oid(oid)
        return self.objects / oid[:2] / oid[2:4] / oid

    def _location(self, oid: str) -> Path:
        if self.staged is not None and oid in self.staged:
            return self.staged[oid]
        return self.path(oid)

    def has(self, oid: str) -> bool:
        if self.staged is not None and oid in self.staged:
            return True
        check_oid(oid)
        # os.path on a str, not pathlib: a checkout asks this of every object two or three
        # times, and pathlib's joins cost more than the stat
        return os.path.isfile(os.path.join(self._objects_dir, oid[:2], oid[2:4], oid))

    def _final(self, oid: str) -> str:
        check_oid(oid)
        # os.path on str, not pathlib: a clean publishes every new object before git gets
        # its answer
        return os.path.join(self._objects_dir, oid[:2], oid[2:4], oid)

    def prepare(self, oid: str, tmp: Path) -> None:
        """Make `tmp` read-only and its shard directory exist, ahead of publish()."""
        try:
            os.chmod(tmp, 0o444)
            os.makedirs(os.path.dirname(self._final(oid)), exist_ok=True)
        except OSError as exc:
            raise StoreWriteError(str(self.objects), exc) from None

    def publish(self, oid: str, tmp: Path, *, prepared: bool = False) -> None:
        final = self._final(oid)
        if os.path.exists(final):
            tmp.unlink()
            return
        try:
            if not prepared:
                self.prepare(oid, tmp)
            os.replace(tmp, final)
        except OSError as exc:
            raise StoreWriteError(os.path.dirname(final), exc) from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Store]:
        """A view of this store whose new objects appear only if the block succeeds.

        A failed `git add` of a truncated checkpoint thus leaves the store as it was.
        """
        txn = Store(self.root)
        txn.staged = {}
        ok = False
        try:
            yield txn
            ok = True
        finally:
            staged, txn.staged = txn.staged, None
            if ok:
                # one rename each (the writers made them ready), on the pool
                from git_theta import parallel

                def publish(item: tuple[str, Path]) -> None:
                    self.publish(*item, prepared=True)

                for _ in parallel.ordered_map(publish, staged.items()):
                    pass
                for raw_hash, kind, obj in txn._staged_map:
                    self.remember(raw_hash, kind, obj)
            else:
                for tmp in staged.values():
                    with contextlib.suppress(FileNotFoundError):
                        tmp.unlink()

    @contextlib.contextmanager
    def writer(self) -> Iterator[ObjectWriter]:
        w = ObjectWriter(self)
        try:
            yield w
        finally:
            w.abort()

    def put(self, data: bytes | memoryview) -> StoredObject:
        with self.writer() as w:
            w.write(data)
            return w.commit()

    def put_file(self, src: Path, oid: str) -> StoredObject:
        """Adopt an already-written file (e.g. a download) after checking its hash."""
        h = hashlib.sha256()
        size = 0
        with open(src, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
        if h.hexdigest() != oid:
            raise ObjectCorruptError(oid, f"content hashes to {h.hexdigest()[:12]}")
        self.publish(oid, src)  # write-once and read-only, like every other object
        return StoredObject(oid, size)

    def _map_verified(self, oid: str, *, always_hash: bool = False) -> Mapped:
        """Map object `oid` and check its sha256 (inside reads_checked_by_value, only when
        `always_hash`); raises ObjectMissing/CorruptError."""
        p = self._location(oid)
        try:
            f = open(p, "rb")  # noqa: SIM115 - closed by Mapped.close
        except FileNotFoundError:
            raise ObjectMissingError(oid) from None
        mapped = Mapped(f)
        if not (always_hash or self._hash_reads):
            return mapped
        actual = hashlib.sha256(mapped.view).hexdigest()
        if actual != oid:
            mapped.close()
            raise ObjectCorruptError(oid, f"content hashes to {actual[:12]}")
        mapped.release(len(mapped.view))  # hashing paged it all in; readers page it back
        return mapped

    @contextlib.contextmanager
    def reads_checked_by_value(self) -> Iterator[None]:
        """Inside the block, objects are read without hashing them.

        For a caller that checks every value it rebuilds against the value's content hash in
        the manifest, which covers every byte of every object the value came from, and calls
        `check` on those objects when a value fails, to name the damaged one (a checkout:
        filters.StorePayloads). That saves a second pass over the stored bytes.
        """
        before, self._hash_reads = self._hash_reads, False
        try:
            yield
        finally:
            self._hash_reads = before

    def check(self, oid: str, *, param: str | None = None, path: str | None = None) -> None:
        """Raise ObjectMissingError / ObjectCorruptError unless `oid` is stored intact."""
        with _naming(oid, param, path):
            self._map_verified(oid, always_hash=True).close()

    @contextlib.contextmanager
    def open_verified(
        self, oid: str, *, param: str | None = None, path: str | None = None
    ) -> Iterator[memoryview]:
        """The stored bytes of `oid`, memory-mapped, after checking their sha256."""
        with self.open_mapped(oid, param=param, path=path) as mapped:
            yield mapped.view

    @contextlib.contextmanager
    def open_mapped(
        self, oid: str, *, param: str | None = None, path: str | None = None
    ) -> Iterator[Mapped]:
        """As open_verified, but the mapping itself: `.view`, and `.release(end)` for a
        reader that streams through the object (see updates.dense.read_value)."""
        with _naming(oid, param, path):
            mapped = self._map_verified(oid)
        try:
            yield mapped
        finally:
            mapped.close()

    def read(self, oid: str, *, param: str | None = None, path: str | None = None) -> bytes:
        with self.open_verified(oid, param=param, path=path) as view:
            return bytes(view)

    # -- the raw-value map ------------------------------------------------------------------

    def _rawmap_path(self, raw_hash: str) -> Path:
        digest = raw_hash.split(":", 1)[-1]
        if not re.match(r"^[0-9a-f]{16,128}$", digest):
            raise ValueError(f"invalid raw hash {raw_hash!r}")
        return self.rawmap / digest[:2] / digest[2:]

    def recall(self, raw_hash: str, kind: str) -> StoredObject | None:
        """The object remembered for this raw value and encoding kind, if still present."""
        for h, k, obj in self._staged_map:
            if h == raw_hash and k == kind:
                return obj
        p = self._rawmap_path(raw_hash)
        try:
            lines = p.read_text().splitlines()
        except (FileNotFoundError, UnicodeDecodeError):
            return None
        for line in lines:
            parts = line.split()
            ok = len(parts) == 3 and parts[0] == kind and OID_RE.match(parts[1])
            if ok and self.has(parts[1]):
                return StoredObject(parts[1], int(parts[2]))
        return None

    def remember(self, raw_hash: str, kind: str, obj: StoredObject) -> None:
        if self.staged is not None:
            self._staged_map.append((raw_hash, kind, obj))
            return
        # the map is only a cache: failing to extend it (disk full) must not fail the command
        with contextlib.suppress(OSError):
            self._remember(raw_hash, kind, obj)

    def _remember(self, raw_hash: str, kind: str, obj: StoredObject) -> None:
        p = self._rawmap_path(raw_hash)
        p.parent.mkdir(parents=True, exist_ok=True)
        line = f"{kind} {obj.oid} {obj.size}\n"
        try:
            old = p.read_text()
        except (FileNotFoundError, UnicodeDecodeError):
            old = ""
        if line in old:
            return
        self.tmp.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="map-")
        with os.fdopen(fd, "w") as f:
            f.write(line + old if old.endswith("\n") or not old else line)
        os.replace(name, p)

    def iter_oids(self) -> Iterator[str]:
        if not self.objects.is_dir():
            return
        for a in sorted(self.objects.iterdir()):
            for b in sorted(a.iterdir()) if a.is_dir() else []:
                for f in sorted(b.iterdir()) if b.is_dir() else []:
                    if OID_RE.match(f.name):
                        yield f.name
