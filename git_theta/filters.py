"""The clean and smudge pipelines: checkpoint bytes <-> manifest + objects.

Both are plain functions over a byte source, a sink and an explicit store; the pkt-line
process (filter_process.py) and the single-shot commands (cli.py) only feed them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import blake3

from git_theta import codec, dtypes, manifest, plugins
from git_theta.checkpoints.base import CheckpointFormat, Sink, SkeletonPart, TensorSpec
from git_theta.errors import CheckpointError, GitThetaError, ObjectCorruptError, UnknownFormatError
from git_theta.manifest import Entry, Manifest
from git_theta.store import Store
from git_theta.streams import ByteSource, spool_dir
from git_theta.updates import choose
from git_theta.updates.base import Record, UpdateType, ValueSpec
from git_theta.updates.dense import DenseUpdate, store_value

SNIFF_BYTES = 4096
MAX_MANIFEST = 1 << 30

# progress(path, done_bytes, total_bytes or None)
Progress = Callable[[str, int, "int | None"], None]


def _no_progress(path: str, done: int, total: int | None) -> None:
    pass


def raw_hash(data: memoryview | bytes) -> str:
    n = len(data)
    h = blake3.blake3(max_threads=blake3.blake3.AUTO if n > (4 << 20) else 1)
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


def clean(
    src: ByteSource,
    path: str | None,
    store: Store,
    *,
    progress: Progress = _no_progress,
    total: int | None = None,
    stats: CleanStats | None = None,
    previous: Manifest | None = None,
) -> bytes:
    """Split the checkpoint on `src` into objects; return the manifest text.

    Content that already is a manifest passes through unchanged (git cleans manifests when
    a checkout skipped smudging). New objects are published only if the whole file succeeds.
    `previous` is the version in the index: a parameter whose dtype, shape and hash are
    unchanged keeps its entry as is (its record, be it dense, a patch or a chain, and any
    extra such as its Fisher diagonal), so re-adding an unchanged file changes nothing.
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
    entries: list[Entry] = []
    skeleton: bytes | None = None
    before = previous.by_name() if previous is not None else {}
    with store.transaction() as txn, spool_dir(store.tmp):
        for part in fmt.split(src, path):
            if isinstance(part, SkeletonPart):
                skeleton = part.data
                continue
            spec, data = part.spec, part.data
            h = raw_hash(data)
            old = before.get(spec.name)
            if old is not None and (old.hash, old.dtype, old.shape) == (h, spec.dtype, spec.shape):
                entries.append(old)
            else:
                record = choose.store_changed(txn, data, spec, h, old, st)
                entries.append(Entry(spec.name, spec.dtype, spec.shape, h, record))
            st.params += 1
            st.bytes_in += len(data)
            progress(label, st.bytes_in, total)
        if skeleton is None:
            raise CheckpointError(path, f"format {fmt.name} produced no skeleton (plugin bug)")
        skel_obj = _store_blob(txn, skeleton)
    m = manifest.build(fmt.name, skel_obj.oid, len(skeleton), entries)
    names = [e.name for e in m.entries]
    if len(set(names)) != len(names):
        raise CheckpointError(path, "two tensors share one name")
    return m.render()


def _store_dense(txn: Store, data: memoryview, spec: TensorSpec, h: str, st: CleanStats) -> Record:
    group = dtypes.get(spec.dtype).itemsize
    kind = f"dense/g{group}"
    obj = txn.recall(h, kind)
    if obj is None:
        obj = store_value(txn, data, group)
        txn.remember(h, kind, obj)
        st.new_objects += 1
        st.new_bytes += obj.size
    return DenseUpdate.record(obj)


def _store_blob(txn: Store, data: bytes) -> object:
    return txn.put(codec.encode(data, 1))


# -- smudge ------------------------------------------------------------------------------------


def load_blob(store: Store, oid: str, *, path: str | None = None, what: str = "skeleton") -> bytes:
    blob = store.read(oid, param=what, path=path)
    try:
        return codec.decode(blob)
    except codec.CodecError as exc:
        raise ObjectCorruptError(oid, str(exc), param=what, path=path) from None


class StorePayloads:
    """Tensor bytes for `join`, rebuilt from their records and checked against their hash."""

    def __init__(
        self, store: Store, m: Manifest, path: str | None, progress: Progress = _no_progress
    ) -> None:
        self.store = store
        self.entries = m.by_name()
        self.path = path
        self.progress = progress
        self.done = 0
        self.total = sum(e.nbytes for e in m.entries)

    def _entry(self, name: str) -> Entry:
        try:
            return self.entries[name]
        except KeyError:
            raise CheckpointError(
                self.path, f"skeleton names tensor {name} that the manifest lacks"
            ) from None

    def prefetch(self, names: Sequence[str]) -> None:
        pass

    def spec(self, e: Entry) -> ValueSpec:
        return ValueSpec(e.name, e.dtype, e.shape, self.path)

    def chunks(self, e: Entry) -> Iterator[bytes | memoryview]:
        return rebuild(self.store, e.record, self.spec(e))

    def write(self, name: str, out: Sink) -> None:
        e = self._entry(name)
        h = blake3.blake3(max_threads=blake3.blake3.AUTO if e.nbytes > (4 << 20) else 1)
        n = 0
        for chunk in self.chunks(e):
            h.update(chunk)
            n += len(chunk)
            out.write(chunk)
        self._check(e, n, "blake3:" + h.hexdigest())

    def read(self, name: str) -> bytes:
        e = self._entry(name)
        data = b"".join(bytes(c) for c in self.chunks(e))
        self._check(e, len(data), raw_hash(data))
        return data

    def _check(self, e: Entry, n: int, h: str) -> None:
        if n != e.nbytes or h != e.hash:
            oid = sorted(_oids(e.record))[0] if _oids(e.record) else "0" * 64
            raise ObjectCorruptError(
                oid,
                "rebuilds to a value whose hash differs from the manifest",
                param=e.name,
                path=self.path,
            )
        self.done += n
        self.progress(self.path or "checkpoint", self.done, self.total)


def _oids(record: Record) -> set[str]:
    from git_theta.updates.base import record_oids

    return record_oids(record)


def rebuild(store: Store, record: Record, spec: ValueSpec) -> Iterator[bytes | memoryview]:
    """The raw bytes of a value from its record (any update type, chains resolved)."""
    kind: UpdateType = plugins.load(plugins.UPDATES, str(record["type"]))

    def resolve(base: Record, base_spec: ValueSpec) -> bytes:
        return b"".join(bytes(c) for c in rebuild(store, base, base_spec))

    return kind.chunks(record, spec, store, resolve)


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
    skeleton = load_blob(store, m.skeleton_oid, path=path)
    specs: Mapping[str, TensorSpec] = {
        e.name: TensorSpec(e.name, e.dtype, e.shape) for e in m.entries
    }
    try:
        fmt.join(skeleton, specs, StorePayloads(store, m, path, progress), out)
    except (ValueError, KeyError) as exc:
        if isinstance(exc, GitThetaError):
            raise
        raise ObjectCorruptError(
            m.skeleton_oid, f"skeleton unusable: {exc}", param="skeleton", path=path
        ) from None
