"""Chains of "xor" deltas down to a dense value, rebuilt by XORing byte-grouped planes."""

from __future__ import annotations

import contextlib
import itertools
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from git_theta import codec, dtypes
from git_theta.errors import ObjectCorruptError
from git_theta.store import Store
from git_theta.updates import delta
from git_theta.updates.base import Record, ValueSpec
from git_theta.updates.delta import DeltaUpdate, xor_chain
from tests.unit.test_patches import entry, rebuilt


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "theta")


def fine_tunes(dtype: str, shape: tuple[int, ...], steps: int) -> list[bytes]:
    """`steps + 1` versions of a value, each a small multiplicative change of the last."""
    rng = np.random.default_rng(7)
    np_dtype = {"F32": np.float32, "F16": np.float16, "I8": np.int8}.get(dtype)
    if dtype == "I8":
        v = rng.integers(-128, 128, shape).astype(np.int8)
        out = [v.tobytes()]
        for _ in range(steps):
            v = v ^ rng.integers(0, 2, shape).astype(np.int8)
            out.append(v.tobytes())
        return out
    from git_theta import arrays

    v = rng.standard_normal(shape)
    out = [arrays.from_float(v, dtype) if np_dtype is None else v.astype(np_dtype).tobytes()]
    for _ in range(steps):
        v = v * (1 + 1e-3 * rng.standard_normal(shape))
        out.append(
            arrays.from_float(v, dtype) if np_dtype is None else v.astype(np_dtype).tobytes()
        )
    return out


def xor_links(store: Store, versions: list[bytes], base: Record, spec: ValueSpec) -> list[Record]:
    """`base` (the first version's record), then each version as an xor delta on the last."""
    records = [base]
    for old, new in itertools.pairwise(versions):
        records.append(DeltaUpdate.candidate(records[-1], old, new, spec).commit(store)[0])
    return records


def link_by_link(
    monkeypatch: pytest.MonkeyPatch, store: Store, record: Record, spec: ValueSpec
) -> bytes:
    """The value rebuilt the general way, each delta on its rebuilt base."""
    with monkeypatch.context() as m:
        m.setattr(delta._ChainPlanes, "open", classmethod(lambda *a, **k: None))
        return rebuilt(store, record, spec.name, spec.dtype, spec.shape)


# (700, 1024) F32 is 2.7 codec chunks; BF16 and I8 exercise 2-byte and 1-byte grouping
@pytest.mark.parametrize(
    ("dtype", "shape"),
    [("F32", (700, 1024)), ("BF16", (700, 1024)), ("F16", (33, 7)), ("I8", (3000, 700))],
)
def test_chain_rebuilds_exactly_and_as_the_general_path_does(
    store: Store, monkeypatch: pytest.MonkeyPatch, dtype: str, shape: tuple[int, ...]
) -> None:
    spec = ValueSpec("w", dtype, shape)
    versions = fine_tunes(dtype, shape, steps=3)
    first = entry(store, "w", versions[0], dtype, shape)
    record = xor_links(store, versions, first.record, spec)[-1]
    chain = xor_chain(record, spec)
    assert chain is not None and len(chain) == 4
    assert chain[-1] == first.record["oid"]
    assert rebuilt(store, record, "w", dtype, shape) == versions[-1]
    assert link_by_link(monkeypatch, store, record, spec) == versions[-1]
    assert rebuilt(store, record["base"], "w", dtype, shape) == versions[-2]


def test_only_xor_links_down_to_a_dense_value_make_a_chain(store: Store) -> None:
    spec = ValueSpec("w", "F32", (16, 16))
    a, b, c = fine_tunes("F32", (16, 16), steps=2)
    dense = entry(store, "w", a, "F32", (16, 16)).record
    xor, _, _ = DeltaUpdate.candidate(dense, a, b, spec, "xor").commit(store)
    sub, _, _ = DeltaUpdate.candidate(dense, a, b, spec, "sub").commit(store)
    assert xor_chain(xor, spec) == [xor["oid"], dense["oid"]]
    assert xor_chain(sub, spec) is None
    on_sub, _, _ = DeltaUpdate.candidate(sub, b, c, spec, "xor").commit(store)
    assert xor_chain(on_sub, spec) is None
    assert xor_chain({**xor, "base_shape": [16, 16]}, spec) is None
    assert xor_chain({**xor, "base": {"type": "sparse", "base": dense}}, spec) is None
    assert rebuilt(store, on_sub, "w", "F32", (16, 16)) == c


def framed(data: bytes, group: int, chunk: int) -> bytes:
    """An object encoded with chunks of `chunk` bytes (older or other writers)."""
    text = json.dumps({"chunk": chunk, "group": group, "size": len(data)}, sort_keys=True)
    out = [codec.MAGIC, struct.pack("<I", len(text)), text.encode()]
    for start in range(0, len(data), chunk):
        frame = codec._compressor().compress(codec.group_bytes(data[start : start + chunk], group))
        out += [struct.pack("<I", len(frame)), frame]
    return b"".join(out)


def test_a_differently_framed_base_is_rebuilt_link_by_link(store: Store) -> None:
    shape = (600, 1024)
    spec = ValueSpec("w", "F32", shape)
    a, b, c = fine_tunes("F32", shape, steps=2)
    obj = store.put(framed(a, 4, 1 << 19))
    base = {"type": "dense", "oid": obj.oid, "size": obj.size}
    record = xor_links(store, [a, b, c], base, spec)[-1]
    chain = xor_chain(record, spec)
    assert chain is not None
    with contextlib.ExitStack() as opened:
        assert delta._ChainPlanes.open(store, chain, spec, opened) is None
    assert rebuilt(store, record, "w", "F32", shape) == c


def bad_frames(size: int, group: int) -> bytes:
    """A well-formed header over frames that are not zstd."""
    frames = -(-size // codec.chunk_size(group))
    return codec.header(size, group) + (struct.pack("<I", 8) + b"notzstd!") * frames


@pytest.mark.parametrize("damage", ["frames", "trailing", "size"])
@pytest.mark.parametrize("link", [0, 1, 2])
def test_a_damaged_object_is_named(store: Store, damage: str, link: int) -> None:
    """Objects that hash right (so the store hands them out) but do not decode: the error
    names the object of the chain that is at fault, whichever it is."""
    shape = (300, 1024)
    spec = ValueSpec("w", "F32", shape)
    versions = fine_tunes("F32", shape, steps=2)
    records = xor_links(store, versions, entry(store, "w", versions[0], "F32", shape).record, spec)
    size = dtypes.nbytes("F32", shape)
    good = store.read(records[link]["oid"])
    blob = {
        "frames": bad_frames(size, 4),
        "trailing": good + b"\0",
        "size": codec.encode(versions[link][:-4], 4),
    }[damage]
    bad = store.put(blob).oid
    # rebuild the chain from the damaged link up with the damaged object in its place
    chain: Record = {**records[link], "oid": bad}
    for r in records[link + 1 :]:
        chain = {**r, "base": chain}
    with pytest.raises(ObjectCorruptError) as exc:
        rebuilt(store, chain, "w", "F32", shape)
    assert exc.value.oid == bad
    assert exc.value.param == "w"
