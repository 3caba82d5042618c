"""What incremental records share: the nested base, chain depth, candidate encodings and the
small arrays (indices, factors, vectors) they keep as store objects.

An incremental record is `{"type": ..., "base": <the base's whole record>, ...}`: the base is
named by content, so rebase, cherry-pick, squash and filter-branch cannot break a chain.
Arrays live in store objects named by `<key>_oid` / `<key>_size` pairs; records stay small
JSON. Encoding is deterministic: the same value against the same base gives the same record.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from git_theta import codec, dtypes, parallel
from git_theta.errors import ObjectCorruptError, UpdateError
from git_theta.store import ObjectWriter, Store
from git_theta.updates.base import Record, Resolver, ValueSpec

# Unsigned integer views of each item size, for bit-exact comparisons and deltas.
UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def depth(record: Record) -> int:
    """How many incremental records stand between this one and its dense keyframe."""
    n = 0
    r: Any = record
    while isinstance(r, Mapping) and isinstance(r.get("base"), Mapping):
        n += 1
        r = r["base"]
    return n


def encode_bytes(data: bytes | memoryview, group: int) -> bytes:
    """`codec.encode`, with the chunks compressed on the thread pool (large values)."""
    view = memoryview(data).cast("B")
    frames = parallel.ordered_map(lambda c: codec.encode_chunk(c, group), codec.chunks(view, group))
    return codec.header(len(view), group) + b"".join(frames)


@dataclass(frozen=True)
class Candidate:
    """One way of storing a value: a record missing only its object ids, and the objects.

    `objects` maps a key prefix to encoded bytes, or to an open store writer holding them
    (clean streams large candidates into writers; `commit` publishes the winner's, the
    losers' are discarded when their writers close): "" becomes `oid`/`size`, "indices"
    becomes `indices_oid`/`indices_size`. `cost` is what storing it would add: objects plus
    the record's own text, which every later manifest line carries (nested bases grow it).
    """

    record: Mapping[str, Any]
    objects: Mapping[str, bytes | ObjectWriter] = field(default_factory=dict)

    @property
    def cost(self) -> int:
        text = json.dumps(self.record, separators=(",", ":"))
        sizes = [o.size if isinstance(o, ObjectWriter) else len(o) for o in self.objects.values()]
        return sum(sizes) + len(text) + 90 * len(self.objects)

    def commit(self, store: Store) -> tuple[dict[str, Any], int, int]:
        """Write the objects; (the full record, new objects, new bytes)."""
        rec = dict(self.record)
        new_objects = new_bytes = 0
        for key, obj in sorted(self.objects.items()):
            with store.writer() as spare:
                if not isinstance(obj, ObjectWriter):
                    spare.write(obj)  # held in memory up to store.SPOOL: no file unless kept
                    obj = spare
                existed = store.has(obj.digest())
                stored = obj.commit()  # write-once: an existing object is not written again
            if not existed:
                new_objects += 1
                new_bytes += stored.size
            prefix = f"{key}_" if key else ""
            rec[prefix + "oid"] = stored.oid
            rec[prefix + "size"] = stored.size
        return rec, new_objects, new_bytes


def load_array(
    store: Store, record: Record, key: str, dtype: str, count: int, spec: ValueSpec
) -> np.ndarray:
    """The flat array of `count` `dtype` items held by object `<key>_oid` (verified)."""
    oid = object_id(record, f"{key}_oid", spec)
    want = count * dtypes.get(dtype).itemsize
    blob = store.read(oid, param=spec.name, path=spec.path)
    try:
        dec = codec.Decoder(blob)
        if dec.size != want:
            raise codec.CodecError(f"holds {dec.size} bytes, the record needs {want}")
        raw = b"".join(bytes(c) for c in dec)
    except codec.CodecError as exc:
        raise ObjectCorruptError(oid, str(exc), param=spec.name, path=spec.path) from None
    return np.frombuffer(raw, dtype=np.dtype(UINT[dtypes.get(dtype).itemsize]))


def load_value_bytes(
    store: Store, record: Record, key: str, dtype: str, shape: tuple[int, ...], spec: ValueSpec
) -> bytes:
    """The raw bytes of a small tensor (factor, vector) kept in object `<key>_oid`."""
    arr = load_array(store, record, key, dtype, dtypes.numel(shape), spec)
    return arr.tobytes()


def base_shape(record: Record, spec: ValueSpec) -> tuple[int, ...]:
    """The shape of the record's base: `base_shape` when the record changes it."""
    shape = record.get("base_shape", list(spec.shape))
    if (
        not isinstance(shape, list)
        or len(shape) > 64
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        or dtypes.numel(tuple(shape)) > dtypes.MAX_ELEMENTS
    ):
        raise UpdateError(f"{spec.name}: bad base_shape in {record.get('type')} record")
    return tuple(shape)


def base_bytes(record: Record, spec: ValueSpec, resolve: Resolver) -> bytes:
    """The rebuilt value of the record's base, which has the shape the record says."""
    base = record.get("base")
    if not isinstance(base, Mapping):
        raise UpdateError(f"{spec.name}: {record.get('type')} record has no base record")
    shape = base_shape(record, spec)
    return resolve(base, ValueSpec(spec.name, spec.dtype, shape, spec.path))


def rechunk(
    chunks: Iterable[bytes | memoryview], step: int, total: int, what: str, spec: ValueSpec
) -> Iterator[memoryview]:
    """The bytes of `chunks` in pieces of exactly `step` bytes (the last shorter), zero-copy
    where the pieces line up; UpdateError unless they add up to `total` bytes."""
    n = 0
    pending = bytearray()
    for c in chunks:
        view = memoryview(c).cast("B")
        n += len(view)
        if n > total:
            break
        if pending:
            take = min(len(view), step - len(pending))
            pending += view[:take]
            view = view[take:]
            if len(pending) < step:
                continue
            yield memoryview(bytes(pending))
            pending.clear()
        while len(view) >= step:
            yield view[:step]
            view = view[step:]
        if len(view):
            pending += view
    if n != total:
        raise UpdateError(
            f"{spec.name}: {what} has {n if n <= total else 'more than ' + str(total)} bytes, "
            f"{spec.dtype}{list(spec.shape)} needs {total}",
            hint="the manifest or the store is damaged; `git theta fsck`",
        )
    if pending:
        yield memoryview(bytes(pending))


def base_stream(
    record: Record, spec: ValueSpec, resolve: Resolver, step: int
) -> Iterator[memoryview]:
    """The record's base rebuilt in pieces of `step` bytes (see `rechunk`), streamed when the
    resolver can (`resolve.stream`, as filters.rebuild's does), else rebuilt whole first."""
    base = record.get("base")
    if not isinstance(base, Mapping):
        raise UpdateError(f"{spec.name}: {record.get('type')} record has no base record")
    shape = base_shape(record, spec)
    bspec = ValueSpec(spec.name, spec.dtype, shape, spec.path)
    stream = getattr(resolve, "stream", None)
    src = stream(base, bspec) if stream is not None else [resolve(base, bspec)]
    what = f"the {record.get('type')} record's base"
    return rechunk(src, step, dtypes.nbytes(spec.dtype, shape), what, bspec)


def object_id(record: Record, key: str, spec: ValueSpec) -> str:
    oid = record.get(key)
    if not isinstance(oid, str):
        raise UpdateError(f"{spec.name}: {record.get('type')} record lacks {key}")
    return oid


def check_size(data: bytes | memoryview, spec: ValueSpec, what: str) -> None:
    want = dtypes.nbytes(spec.dtype, spec.shape)
    if len(data) != want:
        raise UpdateError(
            f"{spec.name}: {what} has {len(data)} bytes, {spec.dtype}{list(spec.shape)} "
            f"needs {want}",
            hint="the manifest or the store is damaged; `git theta fsck`",
        )
