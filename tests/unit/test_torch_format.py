"""The torch.save format: split/join byte identity, naming, storages, hostile input."""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from git_theta.checkpoints.base import TensorSpec
from git_theta.checkpoints.torch_format import TorchFormat
from git_theta.errors import CheckpointError
from git_theta.streams import ByteSource
from tests.unit.format_harness import DictPayloads, split_with

FMT = TorchFormat()


def split(data: bytes) -> tuple[list[TensorSpec], dict[str, bytes], bytes]:
    return split_with(FMT, data, "ckpt.pt")


def saved(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def roundtrip(obj: object) -> tuple[dict[str, TensorSpec], dict[str, bytes]]:
    """Split a torch.save'd object, join it back, check the bytes are identical."""
    data = saved(obj)
    assert FMT.sniff(data[:4096])
    specs, tensors, skeleton = split(data)
    out = io.BytesIO()
    FMT.join(skeleton, {s.name: s for s in specs}, DictPayloads(tensors), out)
    assert out.getvalue() == data
    return {s.name: s for s in specs}, tensors


def raw(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


DTYPES = [
    (torch.float64, "F64"),
    (torch.float32, "F32"),
    (torch.float16, "F16"),
    (torch.bfloat16, "BF16"),
    (torch.float8_e4m3fn, "F8_E4M3"),
    (torch.float8_e5m2, "F8_E5M2"),
    (torch.int64, "I64"),
    (torch.int32, "I32"),
    (torch.int16, "I16"),
    (torch.int8, "I8"),
    (torch.uint8, "U8"),
    (torch.bool, "BOOL"),
    (torch.uint16, "U16"),
    (torch.uint32, "U32"),
    (torch.uint64, "U64"),
    (torch.complex64, "C64"),
]


def sample(dtype: torch.dtype, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = int(np.prod(shape)) if shape else 1
    if dtype.is_floating_point or dtype.is_complex:
        return (torch.randn(n, generator=g) * 3).to(dtype).reshape(shape)
    if dtype == torch.bool:
        return (torch.randint(0, 2, (n,), generator=g) == 1).reshape(shape)
    bits = torch.randint(0, 256, (n * dtype.itemsize,), generator=g, dtype=torch.uint8)
    return bits.view(dtype).reshape(shape)


@pytest.mark.parametrize(("dtype", "name"), DTYPES, ids=[n for _d, n in DTYPES])
@pytest.mark.parametrize("shape", [(), (0,), (0, 3), (5,), (3, 4, 2)], ids=str)
def test_every_dtype_and_shape_round_trips(
    dtype: torch.dtype, name: str, shape: tuple[int, ...]
) -> None:
    t = sample(dtype, shape)
    specs, tensors = roundtrip({"w": t})
    assert specs == {"w": TensorSpec("w", name, shape)}
    assert tensors["w"] == raw(t)


def test_nested_checkpoint_names_and_non_tensor_leaves() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    ckpt = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": 3,
        "name": "x",
        "flag": True,
        "none": None,
        "blob": b"\x00\xffbytes",
        "history": [1.5, (2, "three"), {"k": torch.arange(3)}],
    }
    specs, tensors = roundtrip(ckpt)
    assert set(specs) == {
        "model.0.weight",
        "model.0.bias",
        "model.2.weight",
        "model.2.bias",
        "optimizer.state.0.step",
        "optimizer.state.0.exp_avg",
        "optimizer.state.0.exp_avg_sq",
        "optimizer.state.1.step",
        "optimizer.state.1.exp_avg",
        "optimizer.state.1.exp_avg_sq",
        "optimizer.state.2.step",
        "optimizer.state.2.exp_avg",
        "optimizer.state.2.exp_avg_sq",
        "optimizer.state.3.step",
        "optimizer.state.3.exp_avg",
        "optimizer.state.3.exp_avg_sq",
        "history.2.k",
    }
    assert specs["model.0.weight"] == TensorSpec("model.0.weight", "F32", (3, 4))
    assert specs["optimizer.state.0.step"].shape == ()
    assert tensors["model.2.bias"] == raw(model.state_dict()["2.bias"])
    assert tensors["history.2.k"] == raw(torch.arange(3))


def test_names_are_stable_across_saves() -> None:
    sd = {f"layer{i}": {"w": torch.full((2,), float(i))} for i in range(5)}
    first = [s.name for s in split(saved(sd))[0]]
    second = [s.name for s in split(saved(sd))[0]]
    assert first == second == [f"layer{i}.w" for i in range(5)]


def test_clashing_key_paths_get_numbered() -> None:
    specs, _ = roundtrip({"a.b": torch.zeros(1), "a": {"b": torch.ones(1)}, "": torch.ones(2)})
    assert set(specs) == {"a.b", "a.b#2", "tensor"}


def test_a_bare_tensor_is_named_tensor() -> None:
    specs, _tensors = roundtrip(torch.arange(6, dtype=torch.int32).reshape(2, 3))
    assert specs == {"tensor": TensorSpec("tensor", "I32", (2, 3))}


def test_the_same_tensor_twice_is_one_parameter() -> None:
    w = torch.randn(4, 3)
    specs, tensors = roundtrip({"encoder.embed": w, "decoder.embed": w})
    assert specs == {"encoder.embed": TensorSpec("encoder.embed", "F32", (4, 3))}
    assert tensors["encoder.embed"] == raw(w)


def test_tied_weights_from_a_state_dict_keep_their_shape() -> None:
    emb = torch.nn.Embedding(10, 4)
    head = torch.nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    model = torch.nn.ModuleDict({"emb": emb, "head": head})
    sd = model.state_dict()
    assert sd["emb.weight"] is not sd["head.weight"]  # two tensors, one storage
    specs, _tensors = roundtrip(sd)
    assert specs == {"emb.weight": TensorSpec("emb.weight", "F32", (10, 4))}


def test_partial_views_store_the_flat_storage() -> None:
    w = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    specs, tensors = roundtrip({"w": w, "row": w[1], "col": w[:, 2]})
    assert specs == {"w": TensorSpec("w", "F32", (12,))}
    assert tensors["w"] == raw(w)
    # a lone slice still saves its whole storage
    specs, tensors = roundtrip({"row": w[1]})
    assert specs == {"row": TensorSpec("row", "F32", (12,))}
    assert tensors["row"] == raw(w)


def test_a_transposed_tensor_stores_its_storage_flat() -> None:
    w = torch.arange(6, dtype=torch.int64).reshape(2, 3)
    specs, tensors = roundtrip({"wt": w.t()})
    assert specs == {"wt": TensorSpec("wt", "I64", (6,))}
    assert tensors["wt"] == raw(w)


def test_parameters_and_tensors_with_attributes() -> None:
    p = torch.nn.Parameter(torch.randn(3))
    t = torch.randn(2)
    t.note = "hello"  # type: ignore[attr-defined]
    specs, tensors = roundtrip({"p": p, "t": t})
    assert specs["p"] == TensorSpec("p", "F32", (3,))
    assert specs["t"] == TensorSpec("t", "F32", (2,))
    assert tensors["t"] == raw(t)


def test_tensors_in_sets_are_still_versioned() -> None:
    a = torch.zeros(2)
    specs, _ = roundtrip({"s": {1, 2}, "t": (a,)})
    assert set(specs) == {"t.0"}
    specs, _ = roundtrip({"s": {torch.ones(3)}})
    assert set(specs) == {"__tensor__.0"}


def test_sniff() -> None:
    assert FMT.sniff(saved({"a": torch.zeros(1)})[:4096])
    npz = io.BytesIO()
    np.savez(npz, a=np.zeros(3))
    assert not FMT.sniff(npz.getvalue()[:4096])
    assert not FMT.sniff(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    assert not FMT.sniff(b"")


def test_legacy_files_are_refused_with_the_fix() -> None:
    buf = io.BytesIO()
    torch.save({"a": torch.zeros(2)}, buf, _use_new_zipfile_serialization=False)
    assert FMT.sniff(buf.getvalue()[:4096])
    with pytest.raises(CheckpointError, match=r"legacy torch.save file.*re-save it"):
        split(buf.getvalue())


# -- hostile input ---------------------------------------------------------------------------


class RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    data = saved({"w": torch.zeros(2), "evil": RunsCode(marker)})
    with pytest.raises(CheckpointError, match=r"refuses to load code.*(posix|os)\.system"):
        split(data)
    assert not marker.exists()
    # the same pickle really does run code when loaded unsafely
    torch.load(io.BytesIO(data), weights_only=False)
    assert marker.exists()


def rezip(data: bytes, edit: Callable[[str, bytes], tuple[bytes, int] | None]) -> bytes:
    """The archive rewritten member by member; `edit` may replace content / compression."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            content = src.read(info)
            change = edit(info.filename, content)
            if change is None:
                dst.writestr(info.filename, content, zipfile.ZIP_STORED)
            else:
                dst.writestr(info.filename, change[0], change[1])
    return out.getvalue()


def test_a_storage_of_the_wrong_size_is_refused() -> None:
    data = rezip(
        saved({"w": torch.zeros(4)}),
        lambda n, c: (c[:-4], zipfile.ZIP_STORED) if n.endswith("data/0") else None,
    )
    with pytest.raises(CheckpointError, match="holds 12 bytes but the pickle describes 16"):
        split(data)


def test_a_compressed_storage_is_refused() -> None:
    data = rezip(
        saved({"w": torch.zeros(64)}),
        lambda n, c: (c, zipfile.ZIP_DEFLATED) if n.endswith("data/0") else None,
    )
    with pytest.raises(CheckpointError, match="is compressed"):
        split(data)


def test_a_missing_storage_is_refused() -> None:
    src = zipfile.ZipFile(io.BytesIO(saved({"w": torch.zeros(4)})))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if not info.filename.endswith("data/0"):
                dst.writestr(info.filename, src.read(info))
    with pytest.raises(CheckpointError, match=r"storage member .*data/0 is missing"):
        split(out.getvalue())


def test_rezipped_archives_still_round_trip() -> None:
    data = rezip(saved({"a": torch.ones(3), "b": {"c": torch.arange(4)}}), lambda n, c: None)
    specs, tensors, skeleton = split(data)
    out = io.BytesIO()
    FMT.join(skeleton, {}, DictPayloads(tensors), out)
    assert out.getvalue() == data
    assert [s.name for s in specs] == ["a", "b.c"]


class FakeStorage:
    def __init__(self, key: str, numel: int, cls: object = torch.FloatStorage) -> None:
        self.key, self.numel, self.cls = key, numel, cls


class FakeTensor:
    def __init__(self, storage: FakeStorage, offset: int, size: tuple, stride: tuple) -> None:
        self.args = (storage, offset, size, stride, False, OrderedDict())

    def __reduce__(self) -> tuple[object, tuple]:
        return (torch._utils._rebuild_tensor_v2, self.args)


def handmade(obj: object, storages: dict[str, bytes], *, protocol: int = 2) -> bytes:
    """A torch-layout archive whose pickle is written by hand (no torch.save checks)."""
    buf = io.BytesIO()

    class Pickler(pickle.Pickler):
        def persistent_id(self, o: object) -> object:
            if isinstance(o, FakeStorage):
                return ("storage", o.cls, o.key, "cpu", o.numel)
            return None

    Pickler(buf, protocol=protocol).dump(obj)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        for key, content in storages.items():
            z.writestr(f"archive/data/{key}", content)
        z.writestr("archive/version", "3\n")
    return out.getvalue()


def test_handmade_archive_round_trips() -> None:
    st = FakeStorage("0", 6)
    data = handmade({"w": FakeTensor(st, 0, (2, 3), (3, 1))}, {"0": bytes(24)})
    specs, _tensors, _ = split(data)
    assert specs == [TensorSpec("w", "F32", (2, 3))]


@pytest.mark.parametrize(
    ("obj", "storages", "message"),
    [
        (
            {"w": FakeTensor(FakeStorage("0", 4), 2, (3,), (1,))},
            {"0": bytes(16)},
            "reads past the end of storage 0",
        ),
        (
            {"w": FakeTensor(FakeStorage("0", 4), 0, (2, 2), (1,))},
            {"0": bytes(16)},
            "size and stride differ",
        ),
        (
            {"w": FakeTensor(FakeStorage("0", 4), -1, (2,), (1,))},
            {"0": bytes(16)},
            "not a non-negative integer",
        ),
        (
            {"w": FakeTensor(FakeStorage("0", 1 << 40), 0, (1 << 40,), (1,))},
            {"0": bytes(16)},
            "holds 16 bytes but the pickle describes",
        ),
        (
            {
                "a": FakeTensor(FakeStorage("0", 4), 0, (4,), (1,)),
                "b": FakeTensor(FakeStorage("0", 4, torch.IntStorage), 0, (4,), (1,)),
            },
            {"0": bytes(16)},
            "described two different ways",
        ),
        ({"w": FakeTensor(FakeStorage("0", 4), 0, (4,), (1,))}, {}, "is missing"),
        (
            {"w": FakeTensor(FakeStorage("0", 4, torch.QInt8Storage), 0, (4,), (1,))},
            {"0": bytes(4)},
            "quantized",
        ),
        ({"x": eval}, {}, r"refuses to load code.*(__builtin__|builtins)\.eval"),
        ({"x": getattr}, {}, r"refuses to load code.*(__builtin__|builtins)\.getattr"),
    ],
)
def test_hostile_pickles_are_refused(obj: object, storages: dict[str, bytes], message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        split(handmade(obj, storages))


def test_build_on_an_allowed_global_is_refused() -> None:
    # GLOBAL torch._utils._rebuild_tensor_v2, EMPTY_DICT, BUILD: tries to set attributes
    evil = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}b."
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("archive/data.pkl", evil)
    with pytest.raises(CheckpointError, match="set state"):
        split(out.getvalue())


def test_shared_and_cyclic_containers_are_walked_once() -> None:
    # a list that contains itself, and a chain of lists shared twice at every level
    # (2**60 paths if walked naively)
    loop: list[object] = []
    loop.append(loop)
    chain: list[object] = [FakeTensor(FakeStorage("0", 1), 0, (1,), (1,))]
    for _ in range(60):
        chain = [chain, chain]
    data = handmade({"loop": loop, "chain": chain}, {"0": bytes(4)})
    specs, _, _ = split(data)
    assert [s.name for s in specs] == ["chain" + ".0" * 61]


def test_truncated_files_are_refused_cleanly() -> None:
    data = saved({"w": torch.randn(100), "b": torch.randn(10)})
    for cut in range(0, len(data), max(1, len(data) // 97)):
        with pytest.raises(CheckpointError):
            split(data[:cut])


def test_corrupted_bytes_never_escape_as_other_errors() -> None:
    data = bytearray(saved({"w": torch.randn(8), "meta": {"x": [1, 2, "s"]}}))
    rng = np.random.default_rng(0)
    for _ in range(300):
        bad = bytearray(data)
        for pos in rng.integers(0, len(bad), size=3):
            bad[pos] ^= int(rng.integers(1, 256))
        with contextlib.suppress(CheckpointError):
            split(bytes(bad))


def test_mutated_pickles_never_escape_as_other_errors() -> None:
    src = zipfile.ZipFile(io.BytesIO(saved({"w": torch.randn(8), "m": {"x": [1, "s", 2.5]}})))
    pkl = next(n for n in src.namelist() if n.endswith("data.pkl"))
    good = src.read(pkl)
    rng = np.random.default_rng(1)
    for _ in range(300):
        bad = bytearray(good)
        for pos in rng.integers(0, len(bad), size=2):
            bad[pos] = int(rng.integers(0, 256))
        data = rezip(src.fp.getvalue(), lambda n, c, b=bytes(bad): (b, 0) if n == pkl else None)  # type: ignore[union-attr]
        with contextlib.suppress(CheckpointError):
            split(data)


def patch_central_directory(data: bytes, member_suffix: str, field: int, value: int) -> bytes:
    """Overwrite a 4-byte field of one central directory entry (offsets per the zip spec)."""
    out = bytearray(data)
    pos = out.index(b"PK\x01\x02")
    while pos >= 0:
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", out, pos + 28)
        name = bytes(out[pos + 46 : pos + 46 + name_len]).decode()
        if name.endswith(member_suffix):
            struct.pack_into("<I", out, pos + field, value)
            return bytes(out)
        pos = out.find(b"PK\x01\x02", pos + 46 + name_len + extra_len + comment_len)
    raise AssertionError(f"no member {member_suffix}")


COMPRESSED_SIZE, UNCOMPRESSED_SIZE, HEADER_OFFSET = 20, 24, 42


def test_a_member_overlapping_the_next_is_refused() -> None:
    data = saved({"a": torch.zeros(4), "b": torch.ones(4)})
    for field in (COMPRESSED_SIZE, UNCOMPRESSED_SIZE):
        data = patch_central_directory(data, "data/0", field, 16 + 4096)
    with pytest.raises(CheckpointError, match=r"data/0: data runs past the next record"):
        split(data)


def test_a_member_offset_outside_the_file_is_refused() -> None:
    data = saved({"a": torch.zeros(4)})
    bad = patch_central_directory(data, "data/0", HEADER_OFFSET, len(data) + 100)
    with pytest.raises(CheckpointError, match="outside the file"):
        split(bad)


def test_two_members_at_one_offset_are_refused() -> None:
    data = saved({"a": torch.zeros(4), "b": torch.ones(4)})
    first = zipfile.ZipFile(io.BytesIO(data)).getinfo(
        next(n for n in zipfile.ZipFile(io.BytesIO(data)).namelist() if n.endswith("data/0"))
    )
    bad = patch_central_directory(data, "data/1", HEADER_OFFSET, first.header_offset)
    with pytest.raises(CheckpointError, match=r"runs past the next record|overlaps|local header"):
        split(bad)


@pytest.mark.parametrize("depth", [150, 1_000_000])
def test_deeply_nested_tuple_keys_are_refused_before_unpickling(depth: int) -> None:
    # {((((),),),...): 1}: hashing such a key recurses in C without a guard (a crash)
    pkl = b"\x80\x02}" + b")" + b"\x85" * depth + b"K\x01s."
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("archive/data.pkl", pkl)
    with pytest.raises(CheckpointError, match="nests tuples deeper than 100 levels"):
        split(out.getvalue())


def test_zip64_records_round_trip() -> None:
    src = zipfile.ZipFile(io.BytesIO(saved({"a": torch.ones(3), "b": torch.arange(5)})))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            with dst.open(info.filename, "w", force_zip64=True) as f:
                f.write(src.read(info))
    data = out.getvalue()
    specs, tensors, skeleton = split(data)
    assert [s.name for s in specs] == ["a", "b"]
    assert tensors["b"] == raw(torch.arange(5))
    assert join_bytes(skeleton, tensors) == data


def join_bytes(skeleton: bytes, tensors: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    FMT.join(skeleton, {}, DictPayloads(tensors), out)
    return out.getvalue()


def test_split_holds_one_storage_at_a_time(tmp_path: Path) -> None:
    import tracemalloc

    path = tmp_path / "m.pt"
    torch.save({f"w{i}": torch.full((1 << 20,), float(i)) for i in range(12)}, path)  # 48 MB
    tracemalloc.start()
    try:
        with path.open("rb") as f:
            for _part in FMT.split(ByteSource(f), "m.pt"):
                pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * (4 << 20) + (3 << 20)  # one 4 MB storage (+ copy buffer), not 48 MB


def test_a_storage_key_that_is_a_path_is_refused() -> None:
    st = FakeStorage("../data.pkl", 4)
    with pytest.raises(CheckpointError, match="bad storage key"):
        split(handmade({"w": FakeTensor(st, 0, (4,), (1,))}, {"0": bytes(16)}))


def test_whole_modules_and_numpy_objects_are_refused_by_name() -> None:
    with pytest.raises(CheckpointError, match=r"torch\.nn\.modules\.linear\.Linear"):
        split(saved(torch.nn.Linear(2, 2)))
    with pytest.raises(CheckpointError, match=r"refuses to load code.*numpy"):
        split(saved({"w": torch.zeros(2), "rng": np.random.get_state()}))


def test_join_refuses_a_shape_the_pickle_does_not_describe() -> None:
    specs, tensors, skeleton = split(saved({"w": torch.zeros(2, 3)}))
    wrong = {"w": TensorSpec("w", "F32", (3, 2))}
    with pytest.raises(CheckpointError, match=r"w is F32\[3, 2\] in the manifest.*F32\[2, 3\]"):
        FMT.join(skeleton, wrong, DictPayloads(tensors), io.BytesIO())
    FMT.join(skeleton, {s.name: s for s in specs}, DictPayloads(tensors), io.BytesIO())
