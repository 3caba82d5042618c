"""The automatic choice, on clean, of how a changed parameter is stored.

For a parameter that changed against the version in the index, with the same dtype, the
candidates are (each only where it applies):

- `sparse`: few elements changed (at most SPARSE_MAX_FRACTION of them);
- `delta`: bit patterns XORed with the base, for dense small changes (fine-tunes);
- `rows`: the shape changed only in its leading axis and the base's rows survive in order;
- `dense`: always; free when the same value is already stored (a revert). A value under
  WHOLE_MAX bytes (4 KiB: biases, norms) is always stored dense.

The smallest wins, counting the bytes of its objects plus its record text. XOR was measured
against integer difference on real MiniLM weights moved by relative noise 1e-3 (codec
ratio, smaller is better): fp32 0.542 (xor) vs 0.584 (sub), bf16 0.100 vs 0.141, dense
0.847 / 0.692; so clean uses XOR (the `delta` type still reads both).

The base value is rebuilt from the previous record chunk by chunk, in step with the new
value, and checked against its manifest hash when the walk ends; a base that cannot be
rebuilt (objects not fetched, damage) or a chain already `chain_max()` records deep gets a
dense keyframe instead. No candidate is built whole in memory: the delta and dense objects
stream into store writers (the losers are discarded) and the sparse arrays are kept only
while small, so clean holds little beyond the new value itself (docs/patches.md, Memory).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from functools import cache
from typing import TYPE_CHECKING

import blake3
import numpy as np

from git_theta import codec, dtypes, parallel
from git_theta.checkpoints.base import TensorSpec
from git_theta.errors import GitThetaError
from git_theta.store import ObjectWriter, Store
from git_theta.updates.base import Record, ValueSpec
from git_theta.updates.delta import difference
from git_theta.updates.incremental import UINT, Candidate, depth, encode_bytes, rechunk
from git_theta.updates.rows import match_rows_digests, row_digests
from git_theta.updates.sparse import changed_positions, index_dtype

if TYPE_CHECKING:
    from git_theta.filters import CleanStats
    from git_theta.manifest import Entry

DEFAULT_CHAIN_MAX = 8
SPARSE_MAX_FRACTION = 0.3  # beyond this, index + value per element outweighs a dense copy
DELTA_MIN_FRACTION = 0.01  # below this, sparse always wins
SAMPLE = 1 << 20  # bytes per sample when estimating a dense copy of a large value
# Values under this size are stored whole when they change: a patch would save a few hundred
# bytes, at the cost of rebuilding the base now and a longer chain at every checkout
# (storing MiniLM's 63 changed biases and norms as patches took ~1 ms each, dense ~0.2 ms).
WHOLE_MAX = 4 << 10
CHAIN_ENV = "GIT_THETA_CHAIN_MAX"


@cache
def chain_max() -> int:
    """Longest chain of incremental records before a dense keyframe: $GIT_THETA_CHAIN_MAX,
    else `git config theta.chain.max`, else 8. 0 turns incremental storage off. Read once."""
    from git_theta import git

    value = os.environ.get(CHAIN_ENV)
    if value is None:
        value = git.config_get("theta.chain.max")
    if value is None:
        return DEFAULT_CHAIN_MAX
    try:
        n = int(value)
    except ValueError:
        raise GitThetaError(
            f"theta.chain.max must be a whole number, not {value!r}",
            hint="fix it with `git config theta.chain.max 8`",
        ) from None
    return max(0, n)


def store_changed(
    txn: Store, data: memoryview, spec: TensorSpec, h: str, old: Entry | None, st: CleanStats
) -> Record:
    """Store a new or changed value the cheapest way; return its record.

    Memory stays near a few codec chunks beyond `data`: the base is rebuilt chunk by chunk
    and walked in step with `data`, the delta streams into a store object as it is computed,
    the sparse arrays are kept (compressed) only while they stay small, and the dense
    candidate is sampled first and streamed into the store only when it may win.
    """
    from git_theta import filters

    group = dtypes.get(spec.dtype).itemsize
    kind = f"dense/g{group}"
    small = len(data) < WHOLE_MAX
    if small or old is None or old.dtype != spec.dtype or txn.recall(h, kind) is not None:
        return filters._store_dense(txn, data, spec, h, st)
    if depth(old.record) + 1 > chain_max():
        return filters._store_dense(txn, data, spec, h, st)
    vspec = ValueSpec(spec.name, spec.dtype, spec.shape)
    with contextlib.ExitStack() as stack:
        if spec.shape != old.shape:
            found = _rows(txn, stack, old, data, vspec)
        else:
            found = _scan(txn, stack, old, data, vspec)
        if found is None:
            return filters._store_dense(txn, data, spec, h, st)
        best = min(found, key=lambda c: c.cost)
        if _dense_may_win(data, group, best.cost, old.record):
            dense = Candidate({"type": "dense"}, {"": _write_value(txn, stack, data, group)})
            if dense.cost <= best.cost:
                best = dense
        record, new_objects, new_bytes = best.commit(txn)
    st.stored(new_objects, new_bytes)
    if record["type"] == "dense":
        from git_theta.store import StoredObject

        txn.remember(h, kind, StoredObject(record["oid"], record["size"]))
    return record


def _write_value(
    txn: Store, stack: contextlib.ExitStack, data: bytes | memoryview, group: int
) -> ObjectWriter:
    """An open writer holding `data` encoded (codec.py), not yet committed."""
    view = memoryview(data).cast("B")
    w = stack.enter_context(txn.writer())
    w.write(codec.header(len(view), group))
    for frame in parallel.ordered_map(
        lambda c: codec.encode_chunk(c, group), codec.chunks(view, group)
    ):
        w.write(frame)
    return w


def _base_chunks(txn: Store, old: Entry, step: int) -> Iterator[memoryview]:
    """The rebuilt base in pieces of exactly `step` bytes (the last shorter), then a check
    of its length and hash: raises _BaseUnusable if it is not the manifest's value."""
    from git_theta import filters

    h = filters.value_hasher(old.nbytes)
    spec = ValueSpec(old.name, old.dtype, old.shape)

    def hashed() -> Iterator[bytes | memoryview]:
        for c in filters.rebuild(txn, old.record, spec):
            h.update(c)
            yield c

    try:
        yield from rechunk(hashed(), step, old.nbytes, "the base", spec)
    except GitThetaError:
        raise _BaseUnusable from None
    if "blake3:" + h.hexdigest() != old.hash:
        raise _BaseUnusable


class _BaseUnusable(Exception):
    """The base could not be rebuilt, or not to its manifest hash: store a dense keyframe."""


class _Frames:
    """Bytes appended in any pieces, encoded (codec.py) frame by frame as they fill up:
    `encoded()` equals `codec.encode` of everything appended, holding only compressed bytes."""

    def __init__(self, group: int) -> None:
        self.group = group
        self.step = codec.chunk_size(group)
        self.raw = bytearray()
        self.frames: list[bytes] = []
        self.total = 0
        self.held = 0  # compressed bytes held

    def add(self, data: bytes | memoryview) -> None:
        self.raw += data
        self.total += len(data)
        while len(self.raw) >= self.step:
            self._flush(self.step)

    def _flush(self, n: int) -> None:
        frame = codec.encode_chunk(memoryview(self.raw)[:n], self.group)
        del self.raw[:n]
        self.frames.append(frame)
        self.held += len(frame)

    @property
    def memory(self) -> int:
        """Bytes held: compressed frames plus raw bytes not yet framed."""
        return self.held + len(self.raw)

    def encoded(self) -> bytes:
        if self.raw:
            self._flush(len(self.raw))
        return codec.header(self.total, self.group) + b"".join(self.frames)


def _scan(
    txn: Store, stack: contextlib.ExitStack, old: Entry, data: memoryview, spec: ValueSpec
) -> list[Candidate] | None:
    """One pass over base and new value in step: the XOR delta streams into a store writer,
    changed elements are counted, and the sparse arrays are built while they stay small.
    None if the base is unusable."""
    itemsize = dtypes.get(spec.dtype).itemsize
    numel = max(1, dtypes.numel(spec.shape))
    step = codec.chunk_size(itemsize)
    view = memoryview(data).cast("B")
    idt = index_dtype(dtypes.numel(spec.shape))
    np_idt = UINT[dtypes.get(idt).itemsize]
    sparse_max = int(SPARSE_MAX_FRACTION * numel)
    indices: _Frames | None = _Frames(dtypes.get(idt).itemsize)
    values = _Frames(itemsize)
    delta = stack.enter_context(txn.writer())
    delta.write(codec.header(len(view), itemsize))
    count = 0
    last = 0  # flat index of the last changed element kept for sparse

    uint = UINT.get(itemsize)

    def one(item: tuple[int, memoryview]) -> tuple[bytes, int, np.ndarray | None]:
        i, base = item
        new = view[i * step : i * step + len(base)]
        if uint is None:  # 16-byte elements: compared as rows of bytes
            frame = codec.encode_chunk(difference(base, new, itemsize, "xor"), itemsize)
            positions = changed_positions(base, new, itemsize)
            return frame, len(positions), positions
        diff = np.frombuffer(new, dtype=uint) ^ np.frombuffer(base, dtype=uint)
        frame = codec.encode_chunk(diff.data.cast("B"), itemsize)
        changed = int(np.count_nonzero(diff))
        if indices is None or changed > sparse_max:  # sparse is out: a count is enough
            return frame, changed, None
        return frame, changed, np.flatnonzero(diff)

    try:
        for i, (frame, changed, positions) in enumerate(
            parallel.ordered_map(one, enumerate(_base_chunks(txn, old, step)))
        ):
            delta.write(frame)
            count += changed
            if indices is None or positions is None:
                indices = None
                continue
            if count > sparse_max or indices.memory + values.memory > SPARSE_MAX_HELD:
                indices = None  # too many changes for sparse: stop collecting
                continue
            if len(positions):
                first = i * (step // itemsize)
                pos = positions.astype(np.uint64) + np.uint64(first)
                gaps = np.diff(pos, prepend=np.uint64(last))
                last = int(pos[-1])
                indices.add(np.ascontiguousarray(gaps, dtype=np_idt).tobytes())
                rows = np.frombuffer(view[i * step : (i + 1) * step], dtype=np.uint8)
                values.add(rows.reshape(-1, itemsize)[positions].tobytes())
    except _BaseUnusable:
        return None
    out: list[Candidate] = []
    fraction = count / numel
    if indices is not None and fraction <= SPARSE_MAX_FRACTION:
        record = {"type": "sparse", "base": old.record, "count": count, "index_dtype": idt}
        out.append(Candidate(record, {"indices": indices.encoded(), "values": values.encoded()}))
    if fraction >= DELTA_MIN_FRACTION or not out:
        out.append(Candidate({"type": "delta", "op": "xor", "base": old.record}, {"": delta}))
    return out


def _rows(
    txn: Store, stack: contextlib.ExitStack, old: Entry, data: memoryview, spec: ValueSpec
) -> list[Candidate] | None:
    """The rows candidate (rows dropped from / appended to the base), or None: the base is
    walked row by row for digests, and appended rows stream into a store writer."""
    if not spec.shape or not old.shape or spec.shape[1:] != old.shape[1:]:
        return None
    base_rows = old.shape[0]
    width = dtypes.nbytes(spec.dtype, spec.shape[1:])
    if width == 0:
        return None
    per = max(1, codec.CHUNK // width)
    digests: list[bytes] = []
    try:
        for block in _base_chunks(txn, old, per * width):
            for r in range(len(block) // width):
                digests.append(blake3.blake3(block[r * width : (r + 1) * width]).digest(16))
    except _BaseUnusable:
        return None
    found = match_rows_digests(digests, row_digests(data, spec.shape[0]))
    if found is None:
        return None
    dropped, first_new = found
    idt = "U32" if base_rows <= 0xFFFFFFFF else "U64"
    pos = np.asarray(dropped, dtype=np.uint64)
    gaps = np.diff(pos, prepend=np.uint64(0)).astype(UINT[dtypes.get(idt).itemsize])
    appended = spec.shape[0] - first_new
    record = {
        "type": "rows",
        "base": old.record,
        "base_shape": list(old.shape),
        "dropped": len(dropped),
        "index_dtype": idt,
        "appended": appended,
    }
    objects: dict[str, ObjectWriter | bytes] = {
        "dropped": encode_bytes(gaps.tobytes(), dtypes.get(idt).itemsize)
    }
    if appended:
        tail = memoryview(data).cast("B")[first_new * width :]
        objects["appended"] = _write_value(txn, stack, tail, dtypes.get(spec.dtype).itemsize)
    return [Candidate(record, objects)]


SPARSE_MAX_HELD = 64 << 20  # compressed sparse arrays held while scanning; beyond, no sparse


def _dense_may_win(data: memoryview, group: int, beat: int, base: Record) -> bool:
    """False when a dense copy cannot beat `beat` bytes by the evidence at hand.

    A dense base is the new value's own previous dense copy: its stored size is what a
    dense copy of a value changed this little costs, so one that beats it by 10% or more
    wins without encoding the value again (for the fine-tune-like changes of a 10%-changed
    MiniLM, ~30% of the CPU of storing its changed tensors). Otherwise a large value is
    sampled (start, middle, end): if even a 10% margin leaves the extrapolated dense size
    above `beat`, the full encoding is skipped (it would lose).
    """
    size = base.get("size") if base.get("type") == "dense" else None
    if isinstance(size, int) and beat < 0.9 * size:
        return False
    n = len(data)
    if n > 4 * SAMPLE:
        starts = [s - s % group for s in (0, n // 2, n - SAMPLE)]
        sampled = sum(len(encode_bytes(data[s : s + SAMPLE], group)) for s in starts)
        estimate = sampled * n / (len(starts) * SAMPLE)
        if estimate * 0.9 > beat:
            return False
    return True
