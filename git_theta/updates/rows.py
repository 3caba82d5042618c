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

from git_theta import dtypes
from git_theta.errors import UpdateError
from git_theta.store import Store
from git_theta.updates.base import Record, Resolver, UpdateType, ValueSpec
from git_theta.updates.incremental import (
    UINT,
    Candidate,
    base_bytes,
    base_shape,
    check_size,
    encode_bytes,
    load_array,
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
        base = base_bytes(record, spec, resolve)
        check_size(base, ValueSpec(spec.name, spec.dtype, old_shape, spec.path), "rows base")
        gaps = load_array(store, record, "dropped", idt, dropped, spec).astype(np.uint64)
        pos = np.cumsum(gaps, dtype=np.uint64)
        if dropped and (
            np.any(gaps[1:] == 0) or int(gaps.max()) >= old_shape[0] or int(pos[-1]) >= old_shape[0]
        ):
            raise UpdateError(f"{spec.name}: rows record drops rows out of range")
        width = dtypes.nbytes(spec.dtype, spec.shape[1:])
        rows = np.frombuffer(base, dtype=np.uint8).reshape(old_shape[0], width)
        keep = np.ones(old_shape[0], dtype=bool)
        keep[pos.astype(np.int64)] = False
        yield np.ascontiguousarray(rows[keep]).data.cast("B")
        if appended:
            tail = load_array(store, record, "appended", "U8", appended * width, spec)
            yield tail.data.cast("B")
