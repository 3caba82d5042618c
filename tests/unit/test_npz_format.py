"""The .npz format: split/join byte identity (stored and deflated), conversions, refusals."""

from __future__ import annotations

import contextlib
import io
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from git_theta.checkpoints.base import TensorSpec, decode_splice, encode_splice
from git_theta.checkpoints.npz_format import NpzFormat
from git_theta.errors import CheckpointError
from git_theta.streams import ByteSource
from tests.unit.format_harness import DictPayloads, split_with

FMT = NpzFormat()


def split(data: bytes) -> tuple[list[TensorSpec], dict[str, bytes], bytes]:
    return split_with(FMT, data, "a.npz")


def join(skeleton: bytes, tensors: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    FMT.join(skeleton, {}, DictPayloads(tensors), out)
    return out.getvalue()


def saved(saver: Callable[..., None], *args: object, **arrays: object) -> bytes:
    buf = io.BytesIO()
    saver(buf, *args, **arrays)
    return buf.getvalue()


def roundtrip(data: bytes) -> tuple[dict[str, TensorSpec], dict[str, bytes], bytes]:
    assert FMT.sniff(data[:4096])
    specs, tensors, skeleton = split(data)
    assert join(skeleton, tensors) == data
    return {s.name: s for s in specs}, tensors, skeleton


SAVERS = [np.savez, np.savez_compressed]
DTYPES = [
    ("<f8", "F64"),
    ("<f4", "F32"),
    ("<f2", "F16"),
    ("<i8", "I64"),
    ("<i4", "I32"),
    ("<i2", "I16"),
    ("i1", "I8"),
    ("u1", "U8"),
    ("<u2", "U16"),
    ("<u4", "U32"),
    ("<u8", "U64"),
    ("?", "BOOL"),
    ("<c8", "C64"),
    ("<c16", "C128"),
]


def sample(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(0)
    n = int(np.prod(shape))
    raw = rng.integers(0, 256, size=n * np.dtype(dtype).itemsize, dtype=np.uint8)
    arr = raw.view(dtype).reshape(shape)
    if np.dtype(dtype) == np.bool_:
        arr = (raw % 2).astype(bool).reshape(shape)
    return arr


@pytest.mark.parametrize("saver", SAVERS, ids=["stored", "deflated"])
@pytest.mark.parametrize(("dtype", "name"), DTYPES, ids=[n for _d, n in DTYPES])
@pytest.mark.parametrize("shape", [(), (0,), (0, 3), (5,), (3, 4, 2)], ids=str)
def test_every_dtype_and_shape_round_trips(
    saver: Callable[..., None], dtype: str, name: str, shape: tuple[int, ...]
) -> None:
    arr = sample(dtype, shape)
    specs, tensors, _ = roundtrip(saved(saver, w=arr))
    assert specs == {"w": TensorSpec("w", name, shape)}
    assert tensors["w"] == arr.tobytes()


@pytest.mark.parametrize("saver", SAVERS, ids=["stored", "deflated"])
def test_several_arrays_keep_names_and_order(saver: Callable[..., None]) -> None:
    a, b = np.arange(6.0).reshape(2, 3), np.ones(4, np.float32)
    data = saved(saver, a, b, last=np.int8(7))
    specs, tensors, _ = roundtrip(data)
    file_order = [n.removesuffix(".npy") for n in zipfile.ZipFile(io.BytesIO(data)).namelist()]
    assert list(specs) == file_order
    assert sorted(file_order) == ["arr_0", "arr_1", "last"]
    assert tensors["arr_0"] == a.tobytes()


@pytest.mark.parametrize("saver", SAVERS, ids=["stored", "deflated"])
def test_fortran_order_and_big_endian_are_converted_both_ways(saver: Callable[..., None]) -> None:
    f = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    be = np.arange(6, dtype=">i4").reshape(2, 3)
    both = np.asfortranarray(np.arange(6, dtype=">f8").reshape(3, 2))
    specs, tensors, _ = roundtrip(saved(saver, f=f, be=be, both=both))
    assert specs["f"] == TensorSpec("f", "F32", (3, 4))
    assert tensors["f"] == np.ascontiguousarray(f).tobytes()
    assert specs["be"] == TensorSpec("be", "I32", (2, 3))
    assert tensors["be"] == be.astype("<i4").tobytes()
    assert tensors["both"] == np.ascontiguousarray(both, dtype="<f8").tobytes()


@pytest.mark.parametrize("saver", SAVERS, ids=["stored", "deflated"])
def test_arrays_that_are_not_tensors_stay_verbatim(saver: Callable[..., None]) -> None:
    rec = np.zeros(2, dtype=[("x", "<f4"), ("y", "<i2")])
    data = saved(saver, s=np.array(["ab", "c"]), rec=rec, w=np.ones(3), t=np.float128(1))
    specs, _, _ = roundtrip(data)
    assert list(specs) == ["w"]


def test_deflated_members_keep_only_their_npy_header() -> None:
    big = np.random.default_rng(0).standard_normal(50_000).astype(np.float32)
    data = saved(np.savez_compressed, w=big)
    _, _, skeleton = roundtrip(data)
    assert len(skeleton) < 1000 < len(data)
    _, extra = decode_splice(skeleton)
    assert set(extra["deflate"]) == {"w"}  # type: ignore[arg-type]


def test_a_member_deflated_differently_is_kept_verbatim_and_still_listed() -> None:
    arr = np.tile(np.arange(1000, dtype=np.int32), 50)
    buf = io.BytesIO(saved(np.savez, w=arr))
    npy = zipfile.ZipFile(buf).read("w.npy")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("w.npy", npy, zipfile.ZIP_DEFLATED, compresslevel=1)
    data = out.getvalue()
    specs, tensors, skeleton = roundtrip(data)
    assert specs == {"w": TensorSpec("w", "I32", (50_000,))}
    assert tensors["w"] == arr.tobytes()
    segments, extra = decode_splice(skeleton)
    assert "deflate" not in extra and not any(isinstance(s, str) for s in segments)


def test_join_refuses_to_write_a_member_that_deflates_differently() -> None:
    data = saved(np.savez_compressed, w=np.arange(1000.0))
    _, tensors, skeleton = split(data)
    segments, extra = decode_splice(skeleton)
    extra["deflate"]["w"]["level"] = 1  # type: ignore[index]
    with pytest.raises(CheckpointError, match="does not give the bytes stored"):
        join(encode_splice(segments, extra), tensors)


class RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("saver", SAVERS, ids=["stored", "deflated"])
def test_object_arrays_are_refused_and_never_unpickled(
    saver: Callable[..., None], tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    obj = np.array([RunsCode(marker), 1], dtype=object)
    data = saved(saver, w=np.ones(2), evil=obj)
    with pytest.raises(CheckpointError, match=r"object array.*never runs pickle"):
        split(data)
    assert not marker.exists()


def test_sniff() -> None:
    assert FMT.sniff(saved(np.savez, a=np.zeros(2))[:4096])
    assert FMT.sniff(saved(np.savez_compressed, a=np.zeros(2))[:4096])
    import torch

    buf = io.BytesIO()
    torch.save({"a": torch.zeros(2)}, buf)
    assert not FMT.sniff(buf.getvalue()[:4096])
    assert not FMT.sniff(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")


def rewrite(npy: bytes, method: int = zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("w.npy", npy, method)
    return out.getvalue()


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_hostile_npy_headers_are_refused(method: int) -> None:
    good = zipfile.ZipFile(io.BytesIO(saved(np.savez, w=np.zeros(4)))).read("w.npy")
    header_end = good.index(b"\n") + 1
    cases = {
        "data": good[:-8],  # 3 elements of data for a shape of 4
        "header": good.replace(b"'shape': (4,)", b"'shape': (-4,)"),
        "code": good.replace(b"'descr'", b"(().__class__)"[:7]),  # not a literal
        "magic": b"XXXXXX" + good[6:],
        "version": good[:6] + b"\x09" + good[7:],
        "short": good[: header_end - 5],
    }
    for npy in cases.values():
        with pytest.raises(CheckpointError):
            split(rewrite(npy, method))


def test_deflate_bombs_and_broken_streams_are_refused() -> None:
    data = bytearray(saved(np.savez_compressed, w=np.zeros(100_000)))
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo("w.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    broken = bytearray(data)
    broken[start + 5 : start + 40] = bytes(35)
    with pytest.raises(CheckpointError):
        split(bytes(broken))


def test_truncated_files_are_refused_cleanly() -> None:
    for saver in SAVERS:
        data = saved(saver, w=np.arange(200.0), b=np.ones(3))
        for cut in range(0, len(data), max(1, len(data) // 97)):
            with pytest.raises(CheckpointError):
                split(data[:cut])


def test_corrupted_bytes_never_escape_as_other_errors() -> None:
    rng = np.random.default_rng(0)
    for saver in SAVERS:
        data = saved(saver, w=np.arange(64.0).reshape(8, 8), b=np.ones(3, np.int8))
        for _ in range(300):
            bad = bytearray(data)
            for pos in rng.integers(0, len(bad), size=2):
                bad[pos] ^= int(rng.integers(1, 256))
            with contextlib.suppress(CheckpointError):
                split(bytes(bad))


@pytest.mark.parametrize("saver", SAVERS, ids=["stored", "deflated"])
def test_split_holds_one_array_at_a_time(saver: Callable[..., None], tmp_path: Path) -> None:
    import tracemalloc

    path = tmp_path / "m.npz"
    rng = np.random.default_rng(0)
    saver(path, **{f"w{i}": rng.standard_normal(1 << 19) for i in range(12)})  # 48 MB
    tracemalloc.start()
    try:
        with path.open("rb") as f:
            for _part in FMT.split(ByteSource(f), "m.npz"):
                pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * (4 << 20) + (3 << 20)  # one 4 MB array (+ buffers), not 48 MB


@pytest.mark.parametrize("saver", SAVERS, ids=["stored", "deflated"])
def test_join_refuses_a_dtype_the_header_does_not_describe(saver: Callable[..., None]) -> None:
    _, tensors, skeleton = split(saved(saver, w=np.zeros(4, np.float32)))
    with pytest.raises(CheckpointError, match=r"w is I32\[4\] in the manifest"):
        FMT.join(skeleton, {"w": TensorSpec("w", "I32", (4,))}, DictPayloads(tensors), io.BytesIO())
