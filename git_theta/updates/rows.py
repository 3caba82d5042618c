"""`rows`: a tensor whose leading-axis rows were dropped from and/or appended to the base.

Record: {"type": "rows", "base": {...}, "base_shape": [N, ...], "dropped": D,
"index_dtype": "U32" | "U64", "dropped_oid", "dropped_size", "appended": M
[, "appended_oid", "appended_size"]}. The value is the base with rows `dropped` removed
(the kept rows stay in their order), followed by M new rows. Dropped rows cost their
indices (gaps, byte-grouped, zstd: ~1-2 bytes a row), appended rows cost their own values;
kept rows cost nothing. A vocabulary trimmed by 20% or grown by a few tokens stays cheap.
"""

from __future__ import annotations

from collections.abc import Iterator

import blake3
import numpy as np

from git_theta import codec, dtypes, parallel
from git_theta.errors import ObjectCorruptError, UpdateError
from git_theta.store import Store
from git_theta.updates.base import Record, Resolver, UpdateType, ValueSpec
from git_theta.updates.incremental import (
    UINT,
    Candidate,
    base_shape,
    base_stream,
    encode_bytes,
    load_array,
    object_id,
)


def row_digests(data: bytes | memoryview, rows: int) -> list[bytes]:
    """A 16-byte blake3 digest of each of the `rows` equal rows of `data`."""
    if rows == 0:
        return []
    view = memoryview(data).cast("B")
    width = len(view) // rows
    return [blake3.blake3(view[i * width : (i + 1) * width]).digest(16) for i in range(rows)]


def match_rows(
    base: bytes | memoryview, base_rows: int, new: bytes | memoryview, new_rows: int
) -> tuple[list[int], int] | None:
    """(dropped base rows, index of the first appended new row) if `new` is the base with
    some rows removed and others appended at the end; None if no row of the base survives.

    Greedy in order: a base row equal to the next unmatched new row is kept, otherwise dropped.
    """
    return match_rows_digests(row_digests(base, base_rows), row_digests(new, new_rows))


def match_rows_digests(a: list[bytes], b: list[bytes]) -> tuple[list[int], int] | None:
    """`match_rows` over the rows' digests (base rows `a`, new rows `b`)."""
    dropped: list[int] = []
    j = 0
    for i, d in enumerate(a):
        if j < len(b) and d == b[j]:
            j += 1
        else:
            dropped.append(i)
    if j == 0 and a:
        return None
    return dropped, j


class RowsUpdate(UpdateType):
    name = "rows"

    @staticmethod
    def candidate(
        base_record: Record,
        base: bytes | memoryview,
        old_shape: tuple[int, ...],
        new: bytes | memoryview,
        spec: ValueSpec,
    ) -> Candidate | None:
        """Encode `new` as a row trim/append of the base, if it is one (None otherwise)."""
        if not spec.shape or not old_shape or spec.shape[1:] != old_shape[1:]:
            return None
        found = match_rows(base, old_shape[0], new, spec.shape[0])
        if found is None:
            return None
        dropped, first_new = found
        idt = "U32" if old_shape[0] <= 0xFFFFFFFF else "U64"
        pos = np.asarray(dropped, dtype=np.uint64)
        gaps = np.diff(pos, prepend=np.uint64(0)).astype(UINT[dtypes.get(idt).itemsize])
        if len(pos):
            gaps[0] = pos[0]
        appended = spec.shape[0] - first_new
        record = {
            "type": "rows",
            "base": base_record,
            "base_shape": list(old_shape),
            "dropped": len(dropped),
            "index_dtype": idt,
            "appended": appended,
        }
        objects = {"dropped": encode_bytes(gaps.tobytes(), dtypes.get(idt).itemsize)}
        if appended:
            width = len(new) // spec.shape[0]
            tail = memoryview(new).cast("B")[first_new * width :]
            objects["appended"] = encode_bytes(tail, dtypes.get(spec.dtype).itemsize)
        return Candidate(record, objects)

    def chunks(
        self, record: Record, spec: ValueSpec, store: Store, resolve: Resolver
    ) -> Iterator[bytes | memoryview]:
        old_shape = base_shape(record, spec)
        dropped, appended, idt = (
            record.get("dropped"),
            record.get("appended"),
            record.get("index_dtype"),
        )
        if (
            not spec.shape
            or len(old_shape) != len(spec.shape)
            or old_shape[1:] != spec.shape[1:]
            or not isinstance(dropped, int)
            or not isinstance(appended, int)
            or not 0 <= dropped <= old_shape[0]
            or old_shape[0] - dropped + appended != spec.shape[0]
            or idt not in ("U32", "U64")
        ):
            raise UpdateError(f"{spec.name}: rows record does not fit {list(spec.shape)}")
        gaps = load_array(store, record, "dropped", idt, dropped, spec).astype(np.uint64)
        pos = np.cumsum(gaps, dtype=np.uint64)
        if dropped and (
            np.any(gaps[1:] == 0) or int(gaps.max()) >= old_shape[0] or int(pos[-1]) >= old_shape[0]
        ):
            raise UpdateError(f"{spec.name}: rows record drops rows out of range")
        width = dtypes.nbytes(spec.dtype, spec.shape[1:])
        keep = np.ones(old_shape[0], dtype=bool)
        keep[pos.astype(np.int64)] = False
        # the base streams in blocks of whole rows; each block's kept rows are written out
        per = max(1, codec.CHUNK // max(1, width))
        first = 0
        for block in base_stream(record, spec, resolve, per * width) if width else ():
            n = len(block) // width
            sel = keep[first : first + n]
            if sel.all():
                yield block
            elif sel.any():
                rows = np.frombuffer(block, dtype=np.uint8).reshape(n, width)
                yield np.ascontiguousarray(rows[sel]).data.cast("B")
            first += n
        if appended:
            yield from _decode(store, record, "appended", appended * width, spec)


def _decode(
    store: Store, record: Record, key: str, want: int, spec: ValueSpec
) -> Iterator[bytes | memoryview]:
    """The `want` raw bytes held by object `<key>_oid`, decoded chunk by chunk (verified)."""
    oid = object_id(record, f"{key}_oid", spec)
    with store.open_verified(oid, param=spec.name, path=spec.path) as view:
        try:
            dec = codec.Decoder(view)
            if dec.size != want:
                raise codec.CodecError(f"holds {dec.size} bytes, the record needs {want}")
            yield from parallel.ordered_map(
                lambda fw: codec.decode_frame(fw[0], fw[1], dec.group), dec.frames()
            )
        except codec.CodecError as exc:
            raise ObjectCorruptError(oid, str(exc), param=spec.name, path=spec.path) from None
