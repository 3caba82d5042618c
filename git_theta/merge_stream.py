"""Block-wise merging of one parameter: memory bounded by a few blocks, not by the tensor.

For a strategy that declares itself `blockwise` (merges.base), the driver never holds a
whole value: the raw byte streams of base, ours, theirs (and the Fisher diagonals) are cut
into aligned blocks of BLOCK elements, each block is converted to floats, merged, cast back
to the parameter's dtype, and its bytes are encoded straight into a new dense store object
while they are hashed for the manifest. Conversions, casts and element-wise strategies act on
each element alone, so the result is bit for bit the one the whole-tensor path computes; the
object is byte for byte what `updates.dense.store_value` writes for the same raw value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from git_theta import arrays, codec, dtypes, parallel
from git_theta.errors import MergeError, ObjectCorruptError
from git_theta.filters import rebuild, value_hasher
from git_theta.manifest import Entry
from git_theta.store import Store
from git_theta.updates.base import Record, ValueSpec, record_oids
from git_theta.updates.dense import DenseUpdate

# elements per block: 2 MiB per float64 array, so the ~10 arrays a strategy and the casts
# hold at once stay near 20 MiB (measured: 40 MB less peak than 1M-element blocks)
BLOCK = 1 << 18


def rechunk(chunks: Iterable[bytes | bytearray | memoryview], size: int) -> Iterator[memoryview]:
    """The bytes of `chunks`, cut into pieces of exactly `size` bytes (the last shorter)."""
    buf = bytearray()
    for chunk in chunks:
        view = memoryview(chunk).cast("B")
        while len(view):
            if not buf and len(view) >= size:
                yield view[:size]  # a whole piece inside this chunk: no copy
                view = view[size:]
                continue
            take = min(size - len(buf), len(view))
            buf += view[:take]
            view = view[take:]
            if len(buf) == size:
                out, buf = buf, bytearray()
                yield memoryview(out)
    if buf:
        yield memoryview(buf)


@dataclass(frozen=True)
class Stream:
    """One value to read block by block: its record, dtype, size, and how to check it."""

    name: str
    record: Record
    dtype: str
    shape: tuple[int, ...]
    as_type: type[np.floating]  # the float type the strategy computes in
    expect_hash: str | None  # None: only the length is checked (Fisher diagonals)
    bad: Callable[[], Exception]  # the error for a value that rebuilds wrong


def value_stream(e: Entry, as_type: type[np.floating], path: str | None) -> Stream:
    """The stream of parameter `e`, checked against its hash as load_value checks it."""

    def bad() -> Exception:
        oids = record_oids(e.record) or {"0" * 64}
        return ObjectCorruptError(
            sorted(oids)[0], "rebuilds to a value whose hash differs", param=e.name, path=path
        )

    return Stream(e.name, e.record, e.dtype, e.shape, as_type, e.hash, bad)


def fisher_stream(e: Entry, as_type: type[np.floating], path: str | None) -> Stream:
    """The stream of `e`'s Fisher diagonal (F32 of its shape), length-checked as load_fisher."""

    def bad() -> Exception:
        return MergeError(f"{path}: Fisher information of {e.name} does not match its shape")

    return Stream(e.name + " (fisher)", e.extra["fisher"], "F32", e.shape, as_type, None, bad)


def blocks(store: Store, s: Stream, path: str | None, block: int) -> Iterator[np.ndarray]:
    """The value as flat float arrays of `block` elements (the last shorter).

    The length is checked as the bytes arrive and the hash after the last block: a value
    that rebuilds wrong raises `s.bad()` when the stream is exhausted (or earlier), so the
    caller must read it to the end before trusting what it computed.
    """
    itemsize = dtypes.get(s.dtype).itemsize
    want = dtypes.nbytes(s.dtype, s.shape)
    h = value_hasher(want) if s.expect_hash is not None else None
    seen = 0
    spec = ValueSpec(s.name, s.dtype, s.shape, path)
    for raw in rechunk(rebuild(store, s.record, spec), block * itemsize):
        seen += len(raw)
        if seen > want or len(raw) % itemsize:
            raise s.bad()
        if h is not None:
            h.update(raw)
        yield arrays.to_numpy(raw, s.dtype, (len(raw) // itemsize,)).astype(s.as_type)
    if seen != want or (h is not None and "blake3:" + h.hexdigest() != s.expect_hash):
        raise s.bad()


def aligned_blocks(
    store: Store, streams: list[Stream | None], path: str | None, block: int
) -> Iterator[list[np.ndarray | None]]:
    """Block i of every stream together (None for an absent stream), all streams checked.

    The streams must have the same number of elements.
    """
    numel = dtypes.numel(next(s for s in streams if s is not None).shape)
    gens = [blocks(store, s, path, block) if s is not None else None for s in streams]
    for _ in range(0, numel, block):
        yield [next(g) if g is not None else None for g in gens]
    for g in gens:
        if g is not None:
            for _extra in g:  # runs the end-of-stream checks; a valid stream yields nothing
                raise AssertionError("stream longer than its checked length")


class DenseSink:
    """Encodes a value's raw bytes, given in order, into a dense object while hashing them."""

    def __init__(self, txn: Store, dtype: str, shape: tuple[int, ...]) -> None:
        self.txn = txn
        self.group = dtypes.get(dtype).itemsize
        self.total = dtypes.nbytes(dtype, shape)
        self.hash = value_hasher(self.total)
        self.seen = 0

    def _chunks(self, pieces: Iterable[bytes]) -> Iterator[memoryview]:
        for chunk in rechunk(pieces, codec.chunk_size(self.group)):
            self.hash.update(chunk)
            self.seen += len(chunk)
            yield chunk

    def store(self, pieces: Iterable[bytes]) -> tuple[str, Record]:
        """(raw hash, dense record) of the value whose raw bytes are `pieces`.

        The object is the one store_value writes for the same bytes; a value the store
        already remembers under this hash reuses that object, as the whole-value path does.
        """
        with self.txn.writer() as w:
            w.write(codec.header(self.total, self.group))
            group = self.group
            for frame in parallel.ordered_map(
                lambda c: codec.encode_chunk(c, group), self._chunks(pieces)
            ):
                w.write(frame)
            if self.seen != self.total:
                raise MergeError(f"merged value has {self.seen} bytes, expected {self.total}")
            h = "blake3:" + self.hash.hexdigest()
            kind = f"dense/g{self.group}"
            obj = self.txn.recall(h, kind)
            if obj is None:  # else the writer is dropped: the object exists already
                obj = w.commit()
                self.txn.remember(h, kind, obj)
        return h, DenseUpdate.record(obj)
