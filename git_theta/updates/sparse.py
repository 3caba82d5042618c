"""`sparse`: the elements that changed against the base, as (index, new value) pairs.

Record: {"type": "sparse", "base": {...}, "count": K, "index_dtype": "U32" | "U64",
"indices_oid", "indices_size", "values_oid", "values_size"}. The indices are the flat
positions of the changed elements, ascending, stored as gaps (first index, then differences)
so they are small integers that byte-group and compress to ~1-2 bytes each; the values are
the new raw elements in the parameter's dtype. Rebuild copies the base and writes the values.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from git_theta import codec, dtypes
from git_theta.errors import UpdateError
from git_theta.store import Store
from git_theta.updates.base import Record, Resolver, UpdateType, ValueSpec
from git_theta.updates.incremental import (
    UINT,
    Candidate,
    base_stream,
    encode_bytes,
    load_array,
)


def elements(data: bytes | memoryview, itemsize: int) -> np.ndarray:
    """The value's elements as unsigned integers (bit patterns); rows of bytes for 16-byte
    types."""
    if itemsize in UINT:
        return np.frombuffer(data, dtype=UINT[itemsize])
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, itemsize)


def changed_positions(
    base: bytes | memoryview, new: bytes | memoryview, itemsize: int
) -> np.ndarray:
    """Flat indices of the elements whose bit patterns differ (so -0.0 != 0.0, NaNs compare)."""
    a, b = elements(base, itemsize), elements(new, itemsize)
    diff = a != b
    if diff.ndim > 1:
        diff = diff.any(axis=1)
    return np.flatnonzero(diff)


def index_dtype(numel: int) -> str:
    return "U32" if numel <= 0xFFFFFFFF else "U64"


class SparseUpdate(UpdateType):
    name = "sparse"

    @staticmethod
    def candidate(
        base_record: Record,
        new: bytes | memoryview,
        spec: ValueSpec,
        positions: np.ndarray,
    ) -> Candidate:
        """Encode `new` as the elements at `positions` (ascending flat indices) over the base."""
        itemsize = dtypes.get(spec.dtype).itemsize
        idt = index_dtype(dtypes.numel(spec.shape))
        np_idt = UINT[dtypes.get(idt).itemsize]
        gaps = np.diff(positions, prepend=0).astype(np_idt) if len(positions) else positions
        if len(positions):
            gaps[0] = positions[0]
        values = np.frombuffer(new, dtype=np.uint8).reshape(-1, itemsize)[positions]
        return Candidate(
            {"type": "sparse", "base": base_record, "count": len(positions), "index_dtype": idt},
            {
                "indices": encode_bytes(
                    np.ascontiguousarray(gaps, dtype=np_idt).tobytes(), dtypes.get(idt).itemsize
                ),
                "values": encode_bytes(values.tobytes(), itemsize),
            },
        )

    def chunks(
        self, record: Record, spec: ValueSpec, store: Store, resolve: Resolver
    ) -> Iterator[bytes | memoryview]:
        numel = dtypes.numel(spec.shape)
        itemsize = dtypes.get(spec.dtype).itemsize
        count, idt = record.get("count"), record.get("index_dtype")
        if not isinstance(count, int) or not 0 <= count <= numel or idt not in ("U32", "U64"):
            raise UpdateError(f"{spec.name}: sparse record has a bad count or index_dtype")
        gaps = load_array(store, record, "indices", idt, count, spec).astype(np.uint64)
        if count and (np.any(gaps[1:] == 0) or int(gaps.max()) >= numel):
            raise UpdateError(f"{spec.name}: sparse indices are not strictly increasing")
        positions = np.cumsum(gaps, dtype=np.uint64)
        del gaps
        if count and (int(positions[-1]) >= numel or np.any(positions[1:] <= positions[:-1])):
            raise UpdateError(f"{spec.name}: sparse index {int(positions[-1])} out of range")
        values = load_array(store, record, "values", "U8", count * itemsize, spec)
        values = values.reshape(-1, itemsize)
        # the base streams chunk by chunk; each chunk gets the values that fall inside it
        step = codec.chunk_size(itemsize)
        per = step // itemsize
        first = 0
        lo = 0
        for chunk in base_stream(record, spec, resolve, step):
            n = len(chunk) // itemsize
            hi = int(np.searchsorted(positions, np.uint64(first + n)))
            if hi == lo:
                yield chunk
            else:
                out = np.frombuffer(bytearray(chunk), dtype=np.uint8).reshape(-1, itemsize)
                out[(positions[lo:hi] - np.uint64(first)).astype(np.int64)] = values[lo:hi]
                yield out.data.cast("B")
            lo = hi
            first += per
