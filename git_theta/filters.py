"""The clean and smudge pipelines: checkpoint bytes <-> manifest + objects.

Both are plain functions over a byte source, a sink and an explicit store; the pkt-line
process (filter_process.py) and the single-shot commands (cli.py) only feed them.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import cache

import blake3

from git_theta import codec, dtypes, manifest, parallel, plugins
from git_theta.checkpoints.base import CheckpointFormat, Sink, SkeletonPart, TensorSpec
from git_theta.errors import (
    CheckpointError,
    GitThetaError,
    ManifestError,
    ObjectCorruptError,
    UnknownFormatError,
)
from git_theta.manifest import Entry, Manifest
from git_theta.store import Store, StoredObject
from git_theta.streams import ByteSource, spool_dir
from git_theta.updates.base import Record, UpdateType, ValueSpec
from git_theta.updates.dense import DenseUpdate, store_value

SNIFF_BYTES = 4096
# smudge works ahead of the value being written (see StorePayloads)
SMALL_VALUE = 4 << 20  # values up to this size are rebuilt whole on the pool
AHEAD_BYTES = 32 << 20  # at most this much of them in hand
AHEAD_VALUES = 64  # looking at most this many values ahead
MAX_MANIFEST = 1 << 30

# progress(path, done_bytes, total_bytes or None)
Progress = Callable[[str, int, "int | None"], None]


def _no_progress(path: str, done: int, total: int | None) -> None:
    pass


def value_hasher(nbytes: int) -> blake3.blake3:
    """A blake3 hasher for a value of `nbytes` (multi-threaded above 4 MiB)."""
    return blake3.blake3(max_threads=blake3.blake3.AUTO if nbytes > (4 << 20) else 1)


def raw_hash(data: memoryview | bytes) -> str:
    h = value_hasher(len(data))
    h.update(data)
    return "blake3:" + h.hexdigest()


def detect(head: bytes, path: str | None) -> CheckpointFormat:
    """The installed format whose sniff accepts `head` (first match, by plugin name)."""
    for fmt in plugins.load_all(plugins.CHECKPOINTS).values():
        if fmt.sniff(head):
            return fmt  # type: ignore[no-any-return]
    names = ", ".join(plugins.available(plugins.CHECKPOINTS))
    raise UnknownFormatError(
        path,
        "is not a checkpoint in any installed format",
        hint=f"formats installed: {names}; or untrack it with `git theta untrack`",
    )


# -- clean -------------------------------------------------------------------------------------


@dataclass
class CleanStats:
    params: int = 0
    bytes_in: int = 0
    new_objects: int = 0
    new_bytes: int = 0
    # small changed tensors are stored on several pool threads at once
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def stored(self, objects: int, nbytes: int) -> None:
        with self._lock:
            self.new_objects += objects
            self.new_bytes += nbytes


def clean(
    src: ByteSource,
    path: str | None,
    store: Store,
    *,
    progress: Progress = _no_progress,
    total: int | None = None,
    stats: CleanStats | None = None,
    previous: Manifest | Future[Manifest | None] | None = None,
) -> bytes:
    """Split the checkpoint on `src` into objects; return the manifest text.

    Content that already is a manifest passes through unchanged (git cleans manifests when
    a checkout skipped smudging). New objects are published only if the whole file succeeds.
    `previous` is the version in the index: a parameter whose dtype, shape and hash are
    unchanged keeps its entry as is (its record, be it dense, a patch or a chain, and any
    extra such as its Fisher diagonal), so re-adding an unchanged file changes nothing.
    It may still be being read (a future): it is waited for when the first tensor has been
    read and hashed.
    """
    head = src.peek(SNIFF_BYTES)
    if manifest.is_manifest(head):
        try:
            data = src.read_all(limit=MAX_MANIFEST)
        except ValueError:
            raise CheckpointError(path, "manifest larger than 1 GiB") from None
        manifest.parse(data, path)
        return data
    fmt = detect(head, path)
    st = stats or CleanStats()
    label = path or "checkpoint"
    # entries in file order; a small changed value may still be being stored on the pool
    results: list[Entry | Future[Entry]] = []
    skeleton: bytes | None = None
    before = _Indexed(previous)
    # With a double-buffered format, tensor i is hashed and encoded on a worker thread while
    # the loop reads tensor i+1 from git's pipe; at most one tensor is in flight.
    worker = _tensor_worker() if getattr(fmt, "double_buffered", False) else None
    offload = _Offload() if parallel.workers() > 1 and not parallel.in_pool() else None
    pending: Future[Entry | Future[Entry]] | None = None

    def finish_pending() -> None:
        nonlocal pending
        if pending is not None:
            results.append(pending.result())
            pending = None
            progress(label, st.bytes_in, total)

    # the only objects read are the bases of changed values, each checked against its
    # manifest hash as it is rebuilt (updates/choose.py): no sha256 pass over them first
    with store.transaction() as txn, txn.reads_checked_by_value(), spool_dir(store.tmp):
        try:
            for part in fmt.split(src, path):
                if isinstance(part, SkeletonPart):
                    skeleton = part.data
                    continue
                st.params += 1
                st.bytes_in += len(part.data)
                args = (txn, part.spec, part.data, before, st, offload)
                if worker is None:
                    results.append(_clean_tensor(*args))
                    progress(label, st.bytes_in, total)
                    continue
                job = worker.submit(_clean_tensor, *args)
                finish_pending()
                pending = job
            finish_pending()
            entries = [r.result() if isinstance(r, Future) else r for r in results]
        finally:
            # an error upstream: let every job stop before the transaction rolls back
            if pending is not None:
                wait([pending])
                if pending.exception() is None:
                    results.append(pending.result())
            wait([r for r in results if isinstance(r, Future)])
        if skeleton is None:
            raise CheckpointError(path, f"format {fmt.name} produced no skeleton (plugin bug)")
        skel_obj = _store_blob(txn, skeleton)
        # checked inside the transaction, so a refused file leaves no objects behind
        # the stored size, like every record's: Git LFS downloads need each object's size
        m = manifest.build(fmt.name, skel_obj.oid, skel_obj.size, entries)
        names = [e.name for e in m.entries]
        if len(set(names)) != len(names):
            raise CheckpointError(path, "two tensors share one name")
        text = m.render()
        try:
            manifest.parse(text, path)  # never commit a manifest that cannot be checked out
        except ManifestError as exc:
            raise CheckpointError(path, f"cannot be tracked: {exc.detail}") from None
        if total is not None:
            # tensor bytes never add up to the file size (headers): end the line at 100%
            progress(label, total, total)
    return text


@cache
def _tensor_worker() -> ThreadPoolExecutor:
    # separate from parallel.pool(): the job waits on chunk jobs that run in that pool
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="git-theta-clean")


def _clean_tensor(
    txn: Store,
    spec: TensorSpec,
    data: memoryview,
    before: _Indexed,
    st: CleanStats,
    offload: _Offload | None = None,
) -> Entry | Future[Entry]:
    """The manifest entry of one tensor: the indexed one if unchanged, else newly stored
    (a small value on the pool, when `offload` is given: a future of its entry)."""
    h = raw_hash(data)
    old = before.get(spec.name)
    if old is not None and (old.hash, old.dtype, old.shape) == (h, spec.dtype, spec.shape):
        return old
    if offload is not None and len(data) <= SMALL_VALUE:
        from git_theta.updates import choose

        choose.chain_max()  # read once here (`git config`), not by several pool threads at once
        return offload.submit(txn, data, spec, h, old, st)
    return _store_entry(txn, data, spec, h, old, st)


class _Indexed:
    """The indexed version's entries by name, from a manifest or a future of one (resolved
    on first use, by the one thread that hashes tensors)."""

    def __init__(self, previous: Manifest | Future[Manifest | None] | None) -> None:
        self._previous = previous
        self._entries: Mapping[str, Entry] | None = None

    def get(self, name: str) -> Entry | None:
        if self._entries is None:
            p = self._previous
            m = p.result() if isinstance(p, Future) else p
            self._entries = m.by_name() if m is not None else {}
        return self._entries.get(name)


def _store_entry(
    txn: Store, data: memoryview, spec: TensorSpec, h: str, old: Entry | None, st: CleanStats
) -> Entry:
    # imported on first use: numpy and the encoders load while unchanged tensors are hashed
    from git_theta.updates import choose

    record = choose.store_changed(txn, data, spec, h, old, st)
    return Entry(spec.name, spec.dtype, spec.shape, h, record)


class _Offload:
    """Small changed values stored on the pool, several at once.

    Storing a changed value is mostly fixed costs when it is small (its base rebuilt, the
    candidate encodings, an object written): one at a time, each in a few chunk jobs, they
    left a core idle (MiniLM's 10%-changed version changes 72 tensors, 63 of them biases
    and norms of 1.5-6 KB). On the pool, each is stored whole by one thread (its own maps
    run inline), two or more at a time. The format reuses its buffers, so each value's
    bytes are copied, with at most AHEAD_BYTES of copies in hand.
    """

    def __init__(self) -> None:
        self._held: deque[tuple[Future[Entry], int]] = deque()
        self._bytes = 0

    def submit(
        self,
        txn: Store,
        data: memoryview,
        spec: TensorSpec,
        h: str,
        old: Entry | None,
        st: CleanStats,
    ) -> Future[Entry]:
        held = self._held
        while held and (held[0][0].done() or self._bytes + len(data) > AHEAD_BYTES):
            done, n = held.popleft()
            wait([done])
            self._bytes -= n
        copy = memoryview(bytes(data))
        job = parallel.pool().submit(_store_entry, txn, copy, spec, h, old, st)
        held.append((job, len(copy)))
        self._bytes += len(copy)
        return job


# Values up to this size skip the raw-value map: encoding is deterministic, so the same value
# gets the same object id anyway, and a map file per value cost more than encoding it again
# (writing 63 map files took ~50 ms of adding a 10%-changed MiniLM).
RAWMAP_MIN = 8 << 10


def _store_dense(txn: Store, data: memoryview, spec: TensorSpec, h: str, st: CleanStats) -> Record:
    group = dtypes.get(spec.dtype).itemsize
    if len(data) <= RAWMAP_MIN:
        blob = codec.encode(data, group)
        obj = StoredObject(hashlib.sha256(blob).hexdigest(), len(blob))
        if not txn.has(obj.oid):
            obj = txn.put(blob)
            st.stored(1, obj.size)
        return DenseUpdate.record(obj)
    kind = f"dense/g{group}"
    known = txn.recall(h, kind)
    if known is not None:
        return DenseUpdate.record(known)
    obj = store_value(txn, data, group)
    txn.remember(h, kind, obj)
    st.stored(1, obj.size)
    return DenseUpdate.record(obj)


def _store_blob(txn: Store, data: bytes) -> StoredObject:
    return txn.put(codec.encode(data, 1))


# -- smudge ------------------------------------------------------------------------------------


MAX_SKELETON = 1 << 30  # decoded; safetensors headers stop at 100 MB, pickles are small


def load_blob(
    store: Store,
    oid: str,
    *,
    path: str | None = None,
    what: str = "skeleton",
    size: int | None = None,
) -> bytes:
    """The decoded bytes of object `oid`.

    `size` is the stored size the manifest gives; it and the decoded size (at most
    MAX_SKELETON) are checked before decoding, so a hostile object cannot balloon.
    """
    blob = store.read(oid, param=what, path=path)
    try:
        if size is not None and len(blob) != size:
            raise codec.CodecError(f"is {len(blob)} bytes, the manifest says {size}")
        if (held := codec.Decoder(blob).size) > MAX_SKELETON:
            raise codec.CodecError(f"claims {held} decoded bytes, more than {MAX_SKELETON}")
        return codec.decode(blob)
    except codec.CodecError as exc:
        raise ObjectCorruptError(oid, str(exc), param=what, path=path) from None


class StorePayloads:
    """Tensor bytes for `join`, rebuilt from their records and checked against their hash.

    Rebuilding a small value is mostly fixed costs (mapping its objects, a frame or two, a
    hasher), so small values are rebuilt whole on the thread pool ahead of the one being
    written (up to AHEAD_BYTES of them): a checkpoint of many small tensors uses every core
    instead of waiting on each in turn. Large values stream chunk by chunk as they are
    written (their chunks use the pool).
    """

    def __init__(
        self, store: Store, m: Manifest, path: str | None, progress: Progress = _no_progress
    ) -> None:
        self.store = store
        self.entries = m.by_name()
        self.path = path
        self.progress = progress
        self.done = 0
        self.total = sum(e.nbytes for e in m.entries)
        self.order: list[str] = []
        self.position: dict[str, int] = {}
        self._ahead: dict[str, Future[tuple[bytearray, str]]] = {}
        self._ahead_bytes = 0
        self._scanned = 0  # order[:_scanned] has been considered for working ahead

    def _entry(self, name: str) -> Entry:
        try:
            return self.entries[name]
        except KeyError:
            raise CheckpointError(
                self.path, f"skeleton names tensor {name} that the manifest lacks"
            ) from None

    def prefetch(self, names: Sequence[str]) -> None:
        self.order = list(names)
        self.position = {n: i for i, n in enumerate(self.order)}
        self._scanned = 0

    def _work_ahead(self, name: str) -> None:
        """Queue `name` and the small values after it to be rebuilt whole, until
        AHEAD_BYTES of them are in hand or AHEAD_VALUES are seen. (`name` itself is queued
        too, when small, so that it is not behind the rest.)"""
        i = self.position.get(name)
        if i is None:
            return
        self._scanned = max(self._scanned, i)
        while self._scanned < min(len(self.order), i + AHEAD_VALUES):
            e = self.entries.get(self.order[self._scanned])
            if e is not None and e.nbytes <= SMALL_VALUE and e.name not in self._ahead:
                if self._ahead_bytes + e.nbytes > AHEAD_BYTES:
                    return
                self._ahead[e.name] = parallel.pool().submit(self._rebuild_whole, e)
                self._ahead_bytes += e.nbytes
            self._scanned += 1

    def _rebuild_whole(self, e: Entry) -> tuple[bytearray, str]:
        h = value_hasher(e.nbytes)
        data = bytearray()
        for chunk in self.chunks(e):
            h.update(chunk)
            data += chunk
        return data, "blake3:" + h.hexdigest()

    def _take_ahead(self, name: str) -> tuple[bytearray, str] | None:
        fut = self._ahead.pop(name, None)
        if fut is None:
            return None
        self._ahead_bytes -= self.entries[name].nbytes
        return fut.result()

    def cancel(self) -> None:
        """Drop the work queued ahead (join failed, or is done)."""
        for fut in self._ahead.values():
            fut.cancel()
        self._ahead.clear()
        self._ahead_bytes = 0

    def spec(self, e: Entry) -> ValueSpec:
        return ValueSpec(e.name, e.dtype, e.shape, self.path)

    def chunks(self, e: Entry) -> Iterator[bytes | memoryview]:
        return rebuild(self.store, e.record, self.spec(e))

    def write(self, name: str, out: Sink) -> None:
        e = self._entry(name)
        self._work_ahead(name)
        with self._blaming(e):
            ready = self._take_ahead(name)
            if ready is not None:
                data, digest = ready
                self._check(e, len(data), digest)  # checked before a byte of it is written
                out.write(memoryview(data))
            else:
                h = value_hasher(e.nbytes)
                n = 0
                for chunk in self.chunks(e):
                    h.update(chunk)
                    n += len(chunk)
                    out.write(chunk)
                self._check(e, n, "blake3:" + h.hexdigest())
        self._done(e)

    def read(self, name: str) -> bytes:
        e = self._entry(name)
        self._work_ahead(name)
        with self._blaming(e):
            data, digest = self._take_ahead(name) or self._rebuild_whole(e)
            self._check(e, len(data), digest)
        self._done(e)
        return bytes(data)

    def _check(self, e: Entry, n: int, h: str) -> None:
        if n != e.nbytes or h != e.hash:
            oid = sorted(_oids(e.record))[0] if _oids(e.record) else "0" * 64
            raise ObjectCorruptError(
                oid,
                "rebuilds to a value whose hash differs from the manifest",
                param=e.name,
                path=self.path,
            )

    @contextlib.contextmanager
    def _blaming(self, e: Entry) -> Iterator[None]:
        """A value that cannot be rebuilt, or not to its hash, has its objects hashed: the
        one whose bytes are damaged is named (objects are read unhashed inside
        Store.reads_checked_by_value); with all of them intact, the error stands."""
        try:
            yield
        except ObjectCorruptError:
            for oid in sorted(_oids(e.record)):
                self.store.check(oid, param=e.name, path=self.path)
            raise

    def _done(self, e: Entry) -> None:
        self.done += e.nbytes
        self.progress(self.path or "checkpoint", self.done, self.total)


def _oids(record: Record) -> set[str]:
    from git_theta.updates.base import record_oids

    return record_oids(record)


def rebuild(store: Store, record: Record, spec: ValueSpec) -> Iterator[bytes | memoryview]:
    """The raw bytes of a value from its record (any update type, chains resolved)."""
    kind: UpdateType = plugins.load(plugins.UPDATES, str(record["type"]))
    return kind.chunks(record, spec, store, _Resolver(store))


class _Resolver:
    """Rebuilds nested base records: whole (`__call__`, the Resolver interface) or chunk by
    chunk (`stream`, which incremental.base_stream uses to keep memory near a chunk)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __call__(self, base: Record, base_spec: ValueSpec) -> bytes:
        return b"".join(bytes(c) for c in rebuild(self.store, base, base_spec))

    def stream(self, base: Record, base_spec: ValueSpec) -> Iterator[bytes | memoryview]:
        return rebuild(self.store, base, base_spec)


def missing_objects(store: Store, m: Manifest) -> list[tuple[str, str]]:
    """(oid, what needs it) for every object of `m` not in the local store."""
    out = []
    if not store.has(m.skeleton_oid):
        out.append((m.skeleton_oid, "skeleton"))
    from git_theta.updates.base import record_oids

    for e in m.entries:
        for oid in sorted(record_oids(e.record)):
            if not store.has(oid):
                out.append((oid, e.name))
    return out


def indexed_manifest(path: str | None, cwd: str | None = None) -> Manifest | None:
    """The manifest staged for `path` in the index, if there is a valid one."""
    from git_theta import git

    if not path:
        return None
    data = git.show_blob(":" + path, cwd=cwd)
    if data is None or not manifest.is_manifest(data):
        return None
    try:
        return manifest.parse(data, path)
    except GitThetaError:
        return None


Fetcher = Callable[[Store, Sequence[str], str | None], None]


def smudge(
    data: bytes,
    path: str | None,
    store: Store,
    out: Sink,
    *,
    progress: Progress = _no_progress,
    fetch: Fetcher | None = None,
) -> None:
    """Write the checkpoint that manifest `data` describes to `out`.

    Content that is not a manifest (a file committed before it was tracked) is written
    through unchanged. Every object is checked to be present before the first byte is
    written, so a missing one fails cleanly.
    """
    if not manifest.is_manifest(data):
        out.write(data)
        return
    m = manifest.parse(data, path)
    missing = missing_objects(store, m)
    if missing and fetch is not None:
        fetch(store, sorted({oid for oid, _ in missing}), path)
        missing = missing_objects(store, m)
    if missing:
        from git_theta.errors import ObjectMissingError

        oid, what = missing[0]
        err = ObjectMissingError(oid, param=what, path=path)
        if len(missing) > 1:
            err.message += f" (and {len(missing) - 1} more objects)"
        raise err
    fmt: CheckpointFormat = plugins.load(plugins.CHECKPOINTS, m.format)
    skeleton = load_blob(store, m.skeleton_oid, path=path, size=m.skeleton_size)
    specs: Mapping[str, TensorSpec] = {
        e.name: TensorSpec(e.name, e.dtype, e.shape) for e in m.entries
    }
    payloads = StorePayloads(store, m, path, progress)
    try:
        with store.reads_checked_by_value():  # every value's hash is checked
            fmt.join(skeleton, specs, payloads, out)
    except (ValueError, KeyError) as exc:
        if isinstance(exc, GitThetaError):
            raise
        raise ObjectCorruptError(
            m.skeleton_oid, f"skeleton unusable: {exc}", param="skeleton", path=path
        ) from None
    finally:
        payloads.cancel()
