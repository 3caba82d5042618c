"""Fuzzing the three parsers of untrusted input: any input parses or raises the documented
error class (ManifestError / CheckpointError / CodecError), never anything else, and never
allocates more than a small bound."""

from __future__ import annotations

import io
import json
import struct
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save

from git_theta import codec, manifest
from git_theta.checkpoints.safetensors_format import SafetensorsFormat
from git_theta.errors import CheckpointError, ManifestError
from git_theta.manifest import Entry
from git_theta.streams import ByteSource

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_ALLOC = 64 << 20  # no input below may make a parser allocate more than this


@contextmanager
def bounded_memory(limit: int = MAX_ALLOC) -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < limit, f"parser allocated {peak} bytes"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 70), max_value=1 << 70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Apply (kind, position, byte) edits: 0 flip, 1 delete, 2 insert, 3 truncate."""
    buf = bytearray(data)
    for kind, pos, byte in edits:
        if not buf:
            break
        i = pos % len(buf)
        if kind == 0:
            buf[i] = byte
        elif kind == 1:
            del buf[i]
        elif kind == 2:
            buf.insert(i, byte)
        else:
            del buf[i:]
    return bytes(buf)


edit_lists = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 1 << 30), st.integers(0, 255)), max_size=6
)


# -- manifest ----------------------------------------------------------------------------------

OID = "ab" * 32
HASH = "blake3:" + "cd" * 32
GOOD_MANIFEST = manifest.build(
    "safetensors",
    OID,
    123,
    [
        Entry("a.weight", "F32", (2, 3), HASH, {"type": "dense", "oid": OID, "size": 9}),
        Entry("b.bias", "BF16", (), HASH, {"type": "dense", "oid": OID, "size": 1}),
    ],
).render()


def _parse_manifest(data: bytes) -> None:
    with bounded_memory():
        try:
            m = manifest.parse(data, "m.safetensors")
        except ManifestError:
            return
    assert manifest.parse(m.render()) == m  # whatever parses renders and parses back


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_manifest_random_bytes(data: bytes) -> None:
    _parse_manifest(data)
    _parse_manifest(manifest.MAGIC + data)


@FUZZ
@given(edit_lists)
def test_fuzz_manifest_mutations(edits: list[tuple[int, int, int]]) -> None:
    _parse_manifest(mutate(GOOD_MANIFEST, edits))


@FUZZ
@given(
    st.lists(json_values, max_size=3),
    st.dictionaries(
        st.sampled_from(["name", "dtype", "shape", "hash", "record", "fisher"]),
        json_values,
        max_size=6,
    ),
)
def test_fuzz_manifest_entry_lines(values: list[object], entry: dict[str, object]) -> None:
    head = GOOD_MANIFEST.split(b"\n")[:3]
    lines = [json.dumps(v) for v in values] + [json.dumps(entry)]
    _parse_manifest(b"\n".join(head + [line.encode() for line in lines]) + b"\n")


# -- safetensors header ------------------------------------------------------------------------

FMT = SafetensorsFormat()
GOOD_FILE = save(
    {
        "w": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": np.array([1, 2], dtype=np.int64),
        "s": np.array(True),
    },
    metadata={"k": "v"},
)


def _split(data: bytes) -> None:
    with bounded_memory():
        try:
            for _part in FMT.split(ByteSource(io.BytesIO(data)), "m.safetensors"):
                pass
        except CheckpointError:
            pass


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_safetensors_random_bytes(data: bytes) -> None:
    _split(data)
    _split(struct.pack("<Q", len(data)) + data)


@FUZZ
@given(edit_lists)
def test_fuzz_safetensors_mutations(edits: list[tuple[int, int, int]]) -> None:
    _split(mutate(GOOD_FILE, edits))


tensor_infos = st.fixed_dictionaries(
    {},
    optional={
        "dtype": st.sampled_from(["F32", "BF16", "I64", "BOOL", "F8_E4M3", "X"]) | json_values,
        "shape": st.lists(st.integers(-2, 1 << 41), max_size=4) | json_values,
        "data_offsets": st.lists(st.integers(-2, 1 << 62), max_size=3) | json_values,
    },
)


@FUZZ
@given(
    st.dictionaries(st.text(max_size=6), tensor_infos | json_values, max_size=5),
    st.binary(max_size=64),
)
def test_fuzz_safetensors_headers(header: dict[str, object], body: bytes) -> None:
    raw = json.dumps(header).encode()
    _split(struct.pack("<Q", len(raw)) + raw + body)


# -- object decoder ----------------------------------------------------------------------------

GOOD_OBJECT = codec.encode(np.arange(3000, dtype=np.float32).tobytes(), 4)


def _decode(data: bytes) -> None:
    with bounded_memory(), suppress(codec.CodecError):
        codec.decode(data)


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_decoder_random_bytes(data: bytes) -> None:
    _decode(data)
    _decode(codec.MAGIC + data)


@FUZZ
@given(edit_lists)
def test_fuzz_decoder_mutations(edits: list[tuple[int, int, int]]) -> None:
    _decode(mutate(GOOD_OBJECT, edits))


@FUZZ
@given(
    json_values
    | st.fixed_dictionaries(
        {
            "chunk": st.integers(-1, 1 << 31),
            "group": st.integers(-1, 20),
            "size": st.integers(-1, 1 << 62),
        }
    ),
    st.binary(max_size=200),
)
def test_fuzz_decoder_headers(meta: object, body: bytes) -> None:
    text = json.dumps(meta).encode()
    _decode(codec.MAGIC + struct.pack("<I", len(text)) + text + body)


@FUZZ
@given(st.integers(0, 1 << 40), st.integers(1, 16))
def test_fuzz_decoder_frame_sizes(declared: int, group: int) -> None:
    """A frame whose header declares any size with a tiny body: refused without allocating."""
    frame = codec.encode_chunk(b"\0" * 64, 1)
    meta = {"chunk": codec.CHUNK, "group": group, "size": declared}
    text = json.dumps(meta).encode()
    _decode(codec.MAGIC + struct.pack("<I", len(text)) + text + frame)


def test_documented_errors_only() -> None:
    """The wrappers above swallow only the documented classes: anything else fails them."""
    calls: list[Callable[[bytes], None]] = [_parse_manifest, _split, _decode]
    for fn in calls:
        fn(b"")
