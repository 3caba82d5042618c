"""`delta`: a dense change stored as the difference of bit patterns against the base.

Record: {"type": "delta", "op": "xor" | "sub", "base": {...}, "oid", "size"}. The object is a
normal byte-grouped zstd object (codec.py) of the element-wise difference of the unsigned
integer bit patterns, new XOR base ("xor") or new - base modulo 2**bits ("sub"). A fine-tune
moves every element a little, so sign, exponent and high mantissa bits mostly cancel: the
high byte planes become nearly all zero and compress away, where the tensor itself barely
compresses. Exact for every dtype (integer arithmetic on bit patterns, no float rounding).
Rebuild streams: each decoded chunk is combined with the same slice of the base.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from git_theta import codec, dtypes, parallel
from git_theta.errors import ObjectCorruptError, UpdateError
from git_theta.store import Store
from git_theta.updates.base import Record, Resolver, UpdateType, ValueSpec
from git_theta.updates.incremental import (
    UINT,
    Candidate,
    base_stream,
    encode_bytes,
    object_id,
)

OPS = ("xor", "sub")


def _uint(itemsize: int) -> type[np.unsignedinteger]:
    # 16-byte complex values: byte-wise, which is still exact and nearly as good
    return UINT.get(itemsize, np.uint8)  # type: ignore[return-value]


def difference(base: bytes | memoryview, new: bytes | memoryview, itemsize: int, op: str) -> bytes:
    u = _uint(itemsize)
    a, b = np.frombuffer(base, dtype=u), np.frombuffer(new, dtype=u)
    return (b ^ a if op == "xor" else b - a).tobytes()


def combine(
    base: bytes | memoryview, diff: bytes | memoryview, itemsize: int, op: str
) -> memoryview:
    u = _uint(itemsize)
    a, d = np.frombuffer(base, dtype=u), np.frombuffer(diff, dtype=u)
    out = a ^ d if op == "xor" else a + d
    return out.data.cast("B")  # the array's own bytes: no copy


class DeltaUpdate(UpdateType):
    name = "delta"

    @staticmethod
    def candidate(
        base_record: Record,
        base: bytes | memoryview,
        new: bytes | memoryview,
        spec: ValueSpec,
        op: str = "xor",
    ) -> Candidate:
        itemsize = dtypes.get(spec.dtype).itemsize
        diff = difference(base, new, itemsize, op)
        return Candidate(
            {"type": "delta", "op": op, "base": base_record}, {"": encode_bytes(diff, itemsize)}
        )

    def chunks(
        self, record: Record, spec: ValueSpec, store: Store, resolve: Resolver
    ) -> Iterator[bytes | memoryview]:
        op = record.get("op")
        if op not in OPS:
            raise UpdateError(f"{spec.name}: delta record has unknown op {op!r}")
        itemsize = dtypes.get(spec.dtype).itemsize
        want = dtypes.nbytes(spec.dtype, spec.shape)
        oid = object_id(record, "oid", spec)
        with store.open_verified(oid, param=spec.name, path=spec.path) as view:
            try:
                dec = codec.Decoder(view)
                if dec.size != want or dec.chunk % itemsize:
                    raise codec.CodecError(f"holds {dec.size} bytes, the value has {want}")
                # the base streams in the object's chunks: memory stays near a few chunks
                base = base_stream(record, spec, resolve, dec.chunk)

                def pairs() -> Iterator[tuple[memoryview, int, memoryview]]:
                    for frame, n in dec.frames():
                        b = next(base, None)
                        if b is None or len(b) != n:
                            raise UpdateError(f"{spec.name}: the delta record's base is short")
                        yield frame, n, b
                    if next(base, None) is not None:
                        raise UpdateError(f"{spec.name}: the delta record's base is too long")

                def one(item: tuple[memoryview, int, memoryview]) -> memoryview:
                    frame, n, b = item
                    diff = codec.decode_frame(frame, n, dec.group)
                    return combine(b, diff, itemsize, op)

                yield from parallel.ordered_map(one, pairs())
            except codec.CodecError as exc:
                raise ObjectCorruptError(oid, str(exc), param=spec.name, path=spec.path) from None
