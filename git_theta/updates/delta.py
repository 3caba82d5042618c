"""`delta`: a dense change stored as the difference of bit patterns against the base.

Record: {"type": "delta", "op": "xor" | "sub", "base": {...}, "oid", "size"}. The object is a
normal byte-grouped zstd object (codec.py) of the element-wise difference of the unsigned
integer bit patterns, new XOR base ("xor") or new - base modulo 2**bits ("sub"). A fine-tune
moves every element a little, so sign, exponent and high mantissa bits mostly cancel: the
high byte planes become nearly all zero and compress away, where the tensor itself barely
compresses. Exact for every dtype (integer arithmetic on bit patterns, no float rounding).
Rebuild streams: each decoded chunk is combined with the same slice of the base. A chain of
"xor" deltas down to a dense value (a fine-tune of a fine-tune) is combined before
un-grouping: XOR commutes with byte-grouping, and every object of the chain is framed alike,
so chunk i of the value is ungroup(planes_0 ^ planes_1 ^ ... ^ planes_k), one un-grouping
per chunk instead of one per object.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from git_theta import codec, dtypes, parallel
from git_theta.errors import ObjectCorruptError, UpdateError
from git_theta.store import Mapped, Store
from git_theta.updates.base import MAX_DEPTH, Record, Resolver, UpdateType, ValueSpec
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
        chain = xor_chain(record, spec)
        if chain is not None:
            with contextlib.ExitStack() as opened:
                planes = _ChainPlanes.open(store, chain, spec, opened)
                if planes is not None:
                    yield from planes.chunks()
                    return
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


def xor_chain(record: Record, spec: ValueSpec) -> list[str] | None:
    """The object ids of `record` when it is "xor" deltas down to a dense value of the same
    shape (newest first, the dense object last); None for any other chain."""
    oids: list[str] = []
    r: object = record
    while isinstance(r, Mapping) and r.get("type") == "delta" and len(oids) <= MAX_DEPTH:
        if r.get("op") != "xor" or "base_shape" in r:
            return None
        oids.append(object_id(r, "oid", spec))
        r = r.get("base")
    if not isinstance(r, Mapping) or r.get("type") != "dense":
        return None
    oids.append(object_id(r, "oid", spec))
    return oids


class _ChainPlanes:
    """The verified, mapped objects of an xor chain, decoded chunk by chunk in lockstep.

    Objects of one size and framing have the same frames: chunk i of each holds the same
    bytes of the value, so XORing their planes chunk by chunk gives the value's planes.
    """

    def __init__(
        self, oids: Sequence[str], maps: list[Mapped], decs: list[codec.Decoder], spec: ValueSpec
    ) -> None:
        self.oids, self.maps, self.decs, self.spec = oids, maps, decs, spec

    def _corrupt(self, oid: str, exc: codec.CodecError) -> ObjectCorruptError:
        return ObjectCorruptError(oid, str(exc), param=self.spec.name, path=self.spec.path)

    @classmethod
    def open(
        cls, store: Store, oids: Sequence[str], spec: ValueSpec, opened: contextlib.ExitStack
    ) -> _ChainPlanes | None:
        """None when the objects are framed differently (then the chain is rebuilt link by
        link); ObjectCorruptError for an object that is not a valid encoding of the value."""
        want = dtypes.nbytes(spec.dtype, spec.shape)
        chain = cls(oids, [], [], spec)
        for oid in oids:
            mapped = opened.enter_context(store.open_mapped(oid, param=spec.name, path=spec.path))
            try:
                dec = codec.Decoder(mapped.view)
                if dec.size != want:
                    raise codec.CodecError(f"holds {dec.size} bytes, the value has {want}")
            except codec.CodecError as exc:
                raise chain._corrupt(oid, exc) from None
            chain.maps.append(mapped)
            chain.decs.append(dec)
        first = chain.decs[0]
        if any((d.group, d.chunk) != (first.group, first.chunk) for d in chain.decs):
            return None
        return chain

    def _spans(self, k: int) -> Iterator[tuple[memoryview, int, int]]:
        try:
            yield from self.decs[k].spans()
        except codec.CodecError as exc:
            raise self._corrupt(self.oids[k], exc) from None

    def _combine(self, row: tuple[tuple[memoryview, int, int], ...]) -> bytes | memoryview:
        """Chunk i of the value from chunk i of every object: one un-grouping in all."""
        acc: np.ndarray | None = None
        for oid, (frame, size, _end) in zip(self.oids, row, strict=True):
            try:
                planes = np.frombuffer(codec.decompress_frame(frame, size), dtype=np.uint8)
            except codec.CodecError as exc:
                raise self._corrupt(oid, exc) from None
            if acc is None:
                acc = planes
            elif acc.flags.writeable:
                np.bitwise_xor(acc, planes, out=acc)
            else:
                acc = np.bitwise_xor(acc, planes)  # the first XOR makes a writable array
        assert acc is not None
        return codec.ungroup_bytes(acc.data, self.decs[0].group)

    def chunks(self) -> Iterator[bytes | memoryview]:
        # same size and chunk: every object has the same number of frames, so a strict zip
        # only ever meets the end of all of them together (each checking for trailing bytes)
        rows = zip(*(self._spans(k) for k in range(len(self.oids))), strict=True)
        ends: deque[tuple[int, ...]] = deque()

        def tracked() -> Iterator[tuple[tuple[memoryview, int, int], ...]]:
            for row in rows:
                ends.append(tuple(end for _, _, end in row))
                yield row

        for chunk in parallel.ordered_map(self._combine, tracked()):
            yield chunk
            for mapped, end in zip(self.maps, ends.popleft(), strict=True):
                mapped.release(end)  # the frames behind leave resident memory
