"""torch.save files (the zip format of torch >= 1.6), read without importing torch.

A torch.save file is an uncompressed zip: `<archive>/data.pkl` (the pickled object, whose
tensors point at storages by key), one member `<archive>/data/<key>` per storage holding its
raw little-endian bytes, and small records (version, byteorder, ...). Each storage becomes
one parameter. The skeleton is the whole file with the storage payloads cut out (zip
headers, pickle and other members verbatim), so the file comes back byte-identical.

Parameter names are key paths in the pickled object (`model.layers.0.weight`); see
docs/formats.md for shared storages, views and the names of unreachable tensors.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from git_theta.checkpoints import torch_pickle, ziparchive
from git_theta.checkpoints.base import (
    CheckpointFormat,
    Part,
    Payloads,
    Sink,
    SkeletonPart,
    TensorPart,
    TensorSpec,
    check_splice_specs,
    decode_splice,
    encode_splice,
    join_splice,
    splice_specs,
)
from git_theta.checkpoints.torch_pickle import Loaded, StorageRef, TensorRef
from git_theta.errors import CheckpointError
from git_theta.manifest import MAX_NAME
from git_theta.streams import ByteSource, ReusableBuffer

LEGACY_MAGIC = b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"  # pickled 0x1950a86a20f9469cfc6c
RECORDS = {"data.pkl", "version", ".format_version", "byteorder", ".storage_alignment"}
MAX_PICKLE = 1 << 30
MAX_LITERAL = 1 << 30  # bytes outside storages kept in the skeleton
MAX_DEPTH = 1000
ROOT_NAME = "tensor"


def is_torch_member(name: str) -> bool:
    prefix, sep, rest = name.partition("/")
    if name.endswith(".npy"):  # an .npz whose key happens to contain "/data/"
        return False
    return bool(prefix and sep) and (
        rest in RECORDS or rest.startswith("data/") or rest.startswith(".data/")
    )


def is_legacy(head: bytes) -> bool:
    return head[:1] == b"\x80" and head[2 : 2 + len(LEGACY_MAGIC)] == LEGACY_MAGIC


# -- naming ------------------------------------------------------------------------------------


def _component(key: object) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    return repr(key)


class _Names:
    """Unique names: a clash gets `#2`, `#3`, ... in the order names are asked for."""

    def __init__(self, path: str | None) -> None:
        self.taken: set[str] = set()
        self.path = path

    def claim(self, name: str) -> str:
        name = name or ROOT_NAME
        unique, n = name, 1
        while unique in self.taken:
            n += 1
            unique = f"{name}#{n}"
        if len(unique) > MAX_NAME:
            raise CheckpointError(self.path, f"a tensor's key path is over {MAX_NAME} characters")
        self.taken.add(unique)
        return unique


def tensor_names(loaded: Loaded, names: _Names) -> dict[int, str]:
    """Tensor index -> name, in depth-first key order of the pickled object.

    Dicts, lists and tuples are walked; each container once (shared or cyclic ones at
    their first path only), so the walk is linear in the pickle. A tensor reached twice
    keeps its first name. Tensors not reachable that way (inside sets or object state) are
    named `__tensor__.<i>` by their order in the pickle.
    """
    out: dict[int, str] = {}
    seen: set[int] = set()
    stack: list[tuple[tuple[str, ...], object]] = [((), loaded.root)]
    while stack:
        keys, obj = stack.pop()
        if isinstance(obj, TensorRef):
            if obj.index not in out:
                out[obj.index] = names.claim(".".join(keys))
            continue
        if not isinstance(obj, (dict, list, tuple)) or id(obj) in seen:
            continue
        seen.add(id(obj))
        if len(keys) >= MAX_DEPTH:
            raise CheckpointError(names.path, f"the pickle nests deeper than {MAX_DEPTH} levels")
        items = obj.items() if isinstance(obj, dict) else enumerate(obj)
        try:
            children = [((*keys, _component(k)), v) for k, v in items]
        except RecursionError:
            raise CheckpointError(names.path, "a dict key in the pickle nests too deeply") from None
        stack.extend(reversed(children))
    for t in loaded.tensors:
        if t.index not in out:
            out[t.index] = names.claim(f"__tensor__.{t.index}")
    return out


@dataclass(frozen=True)
class StorageParam:
    key: str
    spec: TensorSpec


def storage_params(loaded: Loaded, path: str | None) -> list[StorageParam]:
    """One parameter per storage, in the pickle's storage order.

    A storage whose every tensor is the whole storage, contiguous and of one shape (the
    usual case, including tied weights saved from a state dict) takes the first tensor's
    name and shape. A storage seen through partial, strided or differently shaped views
    takes the first tensor's name and its flat shape `[numel]`. A storage no tensor views
    is named `__storage__.<key>`.
    """
    names = _Names(path)
    by_tensor = tensor_names(loaded, names)
    viewers: dict[str, list[tuple[str, TensorRef]]] = {}
    for index, name in by_tensor.items():
        t = loaded.tensors[index]
        viewers.setdefault(t.storage.key, []).append((name, t))
    out = []
    for key, storage in loaded.storages.items():
        views = viewers.get(key, [])
        out.append(StorageParam(key, _spec(storage, views, names)))
    return out


def _spec(storage: StorageRef, views: list[tuple[str, TensorRef]], names: _Names) -> TensorSpec:
    dtype = storage.dtype or "U8"
    flat = (storage.elements(),)
    if not views:
        return TensorSpec(names.claim(f"__storage__.{storage.key}"), dtype, flat)
    name, first = views[0]
    whole = all(t.covers_storage() and t.shape == first.shape for _n, t in views)
    return TensorSpec(name, dtype, first.shape if whole else flat)


# -- the format --------------------------------------------------------------------------------


class TorchFormat(CheckpointFormat):
    name = "torch"
    double_buffered = True  # one ReusableBuffer view (or a fresh array) per tensor

    def sniff(self, head: bytes) -> bool:
        if is_legacy(head):
            return True  # claimed so that split can say how to convert it
        first = ziparchive.first_member_name(head)
        return first is not None and is_torch_member(first)

    def split(self, src: ByteSource, path: str | None) -> Iterator[Part]:
        if is_legacy(src.peek(16)):
            src.drain()
            raise CheckpointError(
                path,
                "is a legacy torch.save file (the non-zip format of torch < 1.6)",
                hint="re-save it in the default zip format: "
                "torch.save(torch.load(f, weights_only=True), f)",
            )
        if not src.peek(4).startswith(ziparchive.ZIP_MAGIC):
            src.drain()
            raise CheckpointError(path, "is not a torch.save zip archive")
        with ziparchive.spooled(src, path) as arc:
            yield from _split_archive(arc, path)

    def join(
        self, skeleton: bytes, specs: Mapping[str, TensorSpec], payloads: Payloads, out: Sink
    ) -> None:
        segments, extra = decode_splice(skeleton)
        check_splice_specs(extra.get("specs"), specs)
        join_splice(segments, payloads, out)


def _split_archive(arc: ziparchive.Archive, path: str | None) -> Iterator[Part]:
    if not arc.members:
        raise CheckpointError(path, "is an empty zip archive, not a torch.save file")
    prefix = arc.members[0].name.partition("/")[0]
    pkl = f"{prefix}/data.pkl"
    if pkl not in arc.by_name:
        raise CheckpointError(path, f"has no {pkl}: not a torch.save archive")
    byteorder = f"{prefix}/byteorder"
    if byteorder in arc.by_name and arc.read_member(byteorder, 16) != b"little":
        raise CheckpointError(
            path,
            "is a big-endian torch.save file",
            hint="load and re-save it on a little-endian machine",
        )
    loaded = torch_pickle.load(arc.read_member(pkl, MAX_PICKLE), path)
    params = {f"{prefix}/data/{p.key}": p.spec for p in storage_params(loaded, path)}
    for member_name, spec in params.items():
        _check_storage_member(arc, member_name, spec, path)
    segments: list[bytes | str] = []
    literal = 0
    pos = 0
    buf = ReusableBuffer()
    for m in arc.members:
        found = params.get(m.name)
        if found is None:
            continue
        spec = found
        segments.append(arc.read(pos, m.data_start))
        literal += m.data_start - pos
        if literal > MAX_LITERAL:
            raise CheckpointError(path, f"holds over {MAX_LITERAL} bytes outside its tensors")
        segments.append(spec.name)
        view = buf.view(spec.nbytes)
        arc.read_into(m.data_start, view)
        yield TensorPart(spec, view)
        pos = m.data_end
    if arc.size - pos + literal > MAX_LITERAL:
        raise CheckpointError(path, f"holds over {MAX_LITERAL} bytes outside its tensors")
    segments.append(arc.read(pos, arc.size))
    extra = {"specs": splice_specs(list(params.values()))}
    yield SkeletonPart(encode_splice(segments, extra))


def _check_storage_member(
    arc: ziparchive.Archive, member_name: str, spec: TensorSpec, path: str | None
) -> None:
    m = arc.by_name.get(member_name)
    if m is None:
        raise CheckpointError(path, f"tensor {spec.name}: storage member {member_name} is missing")
    if m.compress_type != ziparchive.STORED:
        raise CheckpointError(
            path,
            f"storage member {member_name} is compressed (zip method {m.compress_type}); "
            "torch.save stores storages uncompressed",
            hint="load it and save it again with torch.save",
        )
    if not m.file_size == m.compress_size == spec.nbytes:
        raise CheckpointError(
            path,
            f"tensor {spec.name}: storage member {member_name} holds {m.compress_size} bytes "
            f"but the pickle describes {spec.nbytes}",
        )
