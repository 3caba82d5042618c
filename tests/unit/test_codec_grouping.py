"""Byte grouping: ungroup(group(x)) == x, and the planes are laid out as documented."""

from __future__ import annotations

import numpy as np
import pytest

from git_theta import codec


@pytest.mark.parametrize("group", [1, 2, 4, 8])
@pytest.mark.parametrize("elements", [0, 1, 7, 4096, 262144])
def test_group_then_ungroup_gives_the_bytes_back(group: int, elements: int) -> None:
    raw = np.random.default_rng(elements).integers(0, 256, elements * group, dtype=np.uint8)
    planes = bytes(codec.group_bytes(raw.tobytes(), group))
    assert bytes(codec.ungroup_bytes(planes, group)) == raw.tobytes()


def test_planes_hold_byte_k_of_every_element_in_turn() -> None:
    values = np.array([0x04030201, 0x08070605, 0x0C0B0A09], dtype="<u4").tobytes()
    planes = bytes(codec.group_bytes(values, 4))
    assert planes == bytes([1, 5, 9, 2, 6, 10, 3, 7, 11, 4, 8, 12])
    assert bytes(codec.ungroup_bytes(planes, 4)) == values


def test_a_length_that_is_not_a_multiple_of_the_group_passes_through() -> None:
    assert bytes(codec.ungroup_bytes(b"abcde", 4)) == b"abcde"


def test_encoded_fp32_round_trips_through_several_chunks() -> None:
    data = np.random.default_rng(1).standard_normal(600_000).astype(np.float32).tobytes()
    blob = codec.encode(data, 4)
    assert codec.decode(blob) == data
    assert len(list(codec.Decoder(blob).frames())) == 3  # 2.4 MB in 1 MiB chunks
