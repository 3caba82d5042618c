"""codec: byte grouping, chunking, framing, and what corrupt or hostile objects get."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import zstandard

from git_theta import codec
from git_theta.codec import CHUNK, CodecError

ITEMSIZES = [1, 2, 4, 8, 16]


def _frame(raw: bytes, *, content_size: bool = True) -> bytes:
    c = zstandard.ZstdCompressor(level=1, write_content_size=content_size)
    frame = c.compress(raw)
    return struct.pack("<I", len(frame)) + frame


def _object(meta: dict[str, int], *frames: bytes) -> bytes:
    text = json.dumps(meta).encode()
    return codec.MAGIC + struct.pack("<I", len(text)) + text + b"".join(frames)


@pytest.mark.parametrize("group", ITEMSIZES)
def test_group_then_ungroup_is_identity_for_every_itemsize(group: int) -> None:
    raw = np.random.default_rng(group).integers(0, 256, size=group * 1001, dtype=np.uint8)
    data = raw.tobytes()
    grouped = bytes(codec.group_bytes(data, group))
    assert len(grouped) == len(data)
    if group > 1:
        # plane k holds byte k of every element
        assert grouped[:1001] == data[0::group]
        assert grouped[1001:2002] == data[1::group]
    assert bytes(codec.ungroup_bytes(grouped, group)) == data


@pytest.mark.parametrize("group", ITEMSIZES)
def test_encode_decode_round_trip_for_every_itemsize(group: int) -> None:
    data = np.random.default_rng(7).standard_normal(3000).astype(np.float64).tobytes()
    data = data[: len(data) - len(data) % group]
    blob = codec.encode(data, group)
    assert codec.decode(blob) == data


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK - 4, CHUNK - 1, CHUNK, CHUNK + 4, 2 * CHUNK, 2 * CHUNK + 8]
)
def test_round_trip_across_chunk_boundaries(size: int) -> None:
    group = 4 if size % 4 == 0 else 1
    data = (np.arange(size, dtype=np.uint64) * 2654435761 % 251).astype(np.uint8).tobytes()
    blob = codec.encode(data, group)
    dec = codec.Decoder(blob)
    frames = list(dec.frames())
    assert len(frames) == -(-size // codec.chunk_size(group))
    assert [want for _f, want in frames][:-1] == [codec.chunk_size(group)] * (len(frames) - 1)
    assert codec.decode(blob) == data


def test_chunk_size_is_a_whole_number_of_elements() -> None:
    for group in range(1, 17):
        assert codec.chunk_size(group) % group == 0
        assert CHUNK - group < codec.chunk_size(group) <= CHUNK


def test_encoding_is_deterministic() -> None:
    data = np.random.default_rng(1).standard_normal(100_000).astype(np.float32).tobytes()
    assert codec.encode(data, 4) == codec.encode(data, 4)
    assert codec.encode(data, 4) != codec.encode(data, 1)  # the grouping is part of the object


def test_grouping_helps_floats() -> None:
    data = np.random.default_rng(2).standard_normal(200_000).astype(np.float32).tobytes()
    assert len(codec.encode(data, 4)) < len(codec.encode(data, 1))


def test_header_is_canonical_json() -> None:
    blob = codec.encode(b"\0" * 12, 4)
    (hlen,) = struct.unpack_from("<I", blob, 4)
    assert blob[8 : 8 + hlen] == b'{"chunk":1048576,"group":4,"size":12}'


# -- corrupt and hostile objects --------------------------------------------------------------


def _good() -> bytes:
    data = np.arange(5000, dtype=np.float32).tobytes()
    return codec.encode(data, 4)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b"XXXX" + b[4:], "bad magic"),
        (lambda b: b[:6], "bad magic"),
        (lambda b: b[:4] + struct.pack("<I", 1 << 20) + b[8:], "header length"),
        (lambda b: b[:4] + struct.pack("<I", len(b)) + b[8:], "header length"),
        (lambda b: b[:-1], "truncated"),
        (lambda b: b[:-100], "truncated"),
        (lambda b: b + b"\0", "trailing bytes"),
    ],
)
def test_damaged_framing_is_a_codec_error(mutate: object, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        codec.decode(mutate(_good()))  # type: ignore[operator]


def test_flipped_byte_inside_a_frame_is_a_codec_error() -> None:
    blob = bytearray(_good())
    (hlen,) = struct.unpack_from("<I", blob, 4)
    start = 8 + hlen + 4
    for pos in range(start, len(blob), max(1, (len(blob) - start) // 40)):
        bad = bytearray(blob)
        bad[pos] ^= 0xFF
        try:
            out = codec.decode(bytes(bad))
        except CodecError:
            continue
        # zstd without checksums may decode a flipped literal; the store's sha256 and the
        # manifest's blake3 catch that case. What must never happen is a wrong *length*.
        assert len(out) == 20000


@pytest.mark.parametrize(
    "meta",
    [
        {"chunk": 4, "group": 4},
        {"chunk": 4, "group": 4, "size": -1},
        {"chunk": 4, "group": 0, "size": 4},
        {"chunk": 4, "group": 17, "size": 4},
        {"chunk": 0, "group": 1, "size": 4},
        {"chunk": (1 << 30) + 1, "group": 1, "size": 4},
    ],
)
def test_bad_header_values_are_codec_errors(meta: dict[str, int]) -> None:
    with pytest.raises(CodecError):
        codec.Decoder(_object(meta, _frame(b"abcd")))


def test_header_that_is_not_json_is_a_codec_error() -> None:
    text = b"{not json"
    blob = codec.MAGIC + struct.pack("<I", len(text)) + text
    with pytest.raises(CodecError, match="unreadable header"):
        codec.Decoder(blob)


def test_frame_declaring_more_than_the_header_allows_is_refused() -> None:
    """A decompression bomb: 16 MiB of zeros in a tiny frame, header says 8 bytes."""
    bomb = _frame(b"\0" * (16 << 20))
    assert len(bomb) < 4096
    blob = _object({"chunk": CHUNK, "group": 1, "size": 8}, bomb)
    with pytest.raises(CodecError, match="declares 16777216 bytes, header expects 8"):
        codec.decode(blob)


def test_frame_declaring_less_than_the_header_is_refused() -> None:
    blob = _object({"chunk": CHUNK, "group": 1, "size": 8}, _frame(b"abcd"))
    with pytest.raises(CodecError, match="declares 4 bytes, header expects 8"):
        codec.decode(blob)


def test_frame_without_a_declared_size_is_refused() -> None:
    blob = _object({"chunk": CHUNK, "group": 1, "size": 4}, _frame(b"abcd", content_size=False))
    with pytest.raises(CodecError):
        codec.decode(blob)


def test_frame_that_is_not_zstd_is_refused() -> None:
    junk = b"\x01\x02\x03\x04\x05\x06\x07\x08"
    blob = _object({"chunk": CHUNK, "group": 1, "size": 4}, struct.pack("<I", len(junk)) + junk)
    with pytest.raises(CodecError, match="bad zstd frame"):
        codec.decode(blob)


def test_header_size_larger_than_the_frames_is_truncation() -> None:
    blob = _object({"chunk": 4, "group": 1, "size": 12}, _frame(b"abcd"), _frame(b"efgh"))
    with pytest.raises(CodecError, match="truncated"):
        codec.decode(blob)


def test_deeply_nested_header_is_a_codec_error() -> None:
    text = b"[" * 30000 + b"]" * 30000
    blob = codec.MAGIC + struct.pack("<I", len(text)) + text
    with pytest.raises(CodecError):
        codec.Decoder(blob)
