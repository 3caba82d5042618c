"""safetensors, parsed as a stream: header, then each tensor in offset order.

Memory stays near the largest tensor. The header bytes are kept verbatim in the skeleton,
so the file comes back byte-identical. Validation follows the safetensors spec and adds
what a hostile file could abuse: duplicate keys, overlapping or out-of-order offsets,
holes, lengths that disagree with dtype x shape, absurd sizes, trailing bytes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Mapping
from typing import Any

from git_theta import dtypes
from git_theta.checkpoints.base import (
    CheckpointFormat,
    Part,
    Payloads,
    Sink,
    SkeletonPart,
    TensorPart,
    TensorSpec,
    decode_splice,
    encode_splice,
    join_splice,
)
from git_theta.errors import CheckpointError
from git_theta.streams import ByteSource, ReusableBuffer

MAX_HEADER = 100 * 1024 * 1024  # the safetensors library's own limit


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def parse_header(raw: bytes, path: str | None) -> list[tuple[int, int, TensorSpec]]:
    """(start, end, spec) of every tensor, sorted by offset and checked to tile the data."""
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:  # deep nesting: RecursionError
        raise CheckpointError(path, f"safetensors header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise CheckpointError(path, "safetensors header is not a JSON object")
    out = []
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise CheckpointError(path, "safetensors __metadata__ must map strings to strings")
            continue
        if not isinstance(info, dict):
            raise CheckpointError(path, f"tensor {name}: entry is not an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in dtypes.DTYPES:
            raise CheckpointError(path, f"tensor {name}: unsupported dtype {dtype!r}")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise CheckpointError(path, f"tensor {name}: bad shape {shape!r}")
        if dtypes.numel(tuple(shape)) > dtypes.MAX_ELEMENTS:
            raise CheckpointError(path, f"tensor {name}: shape {shape} is absurdly large")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise CheckpointError(path, f"tensor {name}: bad data_offsets {offsets!r}")
        spec = TensorSpec(name, dtype, tuple(shape))
        if offsets[1] - offsets[0] != spec.nbytes:
            raise CheckpointError(
                path,
                f"tensor {name}: data_offsets span {offsets[1] - offsets[0]} bytes but "
                f"{dtype}{list(shape)} needs {spec.nbytes}",
            )
        out.append((offsets[0], offsets[1], spec))
    out.sort(key=lambda t: (t[0], t[1]))
    pos = 0
    for start, end, spec in out:
        if start != pos:
            what = "overlaps the previous tensor" if start < pos else "leaves a hole before it"
            raise CheckpointError(path, f"tensor {spec.name}: data {what}")
        pos = end
    return out


class SafetensorsFormat(CheckpointFormat):
    name = "safetensors"
    double_buffered = True

    def sniff(self, head: bytes) -> bool:
        if len(head) < 9:
            return False
        (n,) = struct.unpack("<Q", head[:8])
        return 2 <= n <= MAX_HEADER and head[8:9] == b"{"

    def split(self, src: ByteSource, path: str | None) -> Iterator[Part]:
        try:
            prefix = src.read_exact(8)
            (n,) = struct.unpack("<Q", prefix)
            if n > MAX_HEADER:
                raise CheckpointError(path, f"safetensors header length {n} exceeds 100 MB")
            raw_header = src.read_exact(n)
        except EOFError:
            raise CheckpointError(
                path,
                "truncated safetensors file: the header is incomplete",
                hint="the file was cut short; restore it from its source",
            ) from None
        layout = parse_header(raw_header, path)
        buf = ReusableBuffer()
        for _start, _end, spec in layout:
            try:
                view = buf.view(spec.nbytes)
            except MemoryError:
                raise CheckpointError(
                    path, f"tensor {spec.name}: {spec.nbytes} bytes do not fit in memory"
                ) from None
            try:
                src.read_exact_into(view)
            except EOFError as exc:
                raise CheckpointError(
                    path,
                    f"truncated safetensors file: tensor {spec.name} is missing "
                    f"{exc.args[0]} of its {spec.nbytes} bytes",
                    hint="the file was cut short; restore it from its source",
                ) from None
            yield TensorPart(spec, view)
        if not src.at_eof():
            extra = src.drain()
            raise CheckpointError(path, f"{extra} unexpected bytes after the last tensor")
        segments: list[bytes | str] = [prefix + raw_header]
        segments += [spec.name for _s, _e, spec in layout]
        yield SkeletonPart(encode_splice(segments))

    def join(
        self, skeleton: bytes, specs: Mapping[str, TensorSpec], payloads: Payloads, out: Sink
    ) -> None:
        segments, _extra = decode_splice(skeleton)
        _check_specs(segments, specs)
        join_splice(segments, payloads, out)

    def respec(self, skeleton: bytes, specs: Mapping[str, TensorSpec]) -> bytes:
        """The header rewritten for `specs`: kept tensors keep their order, added ones follow
        sorted by name, offsets recomputed, `__metadata__` kept, padded to 8 bytes with
        spaces as the safetensors library does."""
        segments, _extra = decode_splice(skeleton)
        head = segments[0]
        if not isinstance(head, bytes) or len(head) < 8:
            raise ValueError("safetensors skeleton does not start with its header")
        old = json.loads(head[8:].decode("utf-8"))
        order = [n for n in old if n != "__metadata__" and n in specs]
        order += sorted(set(specs) - set(order))
        header: dict[str, Any] = {}
        if "__metadata__" in old:
            header["__metadata__"] = old["__metadata__"]
        pos = 0
        for name in order:
            spec = specs[name]
            header[name] = {
                "dtype": spec.dtype,
                "shape": list(spec.shape),
                "data_offsets": [pos, pos + spec.nbytes],
            }
            pos += spec.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * (-len(raw) % 8)
        return encode_splice([struct.pack("<Q", len(raw)) + raw, *order])


def _check_specs(segments: list[bytes | str], specs: Mapping[str, TensorSpec]) -> None:
    """The header kept in the skeleton and the manifest must describe the same tensors, else
    the rebuilt file would be silently broken; checked before the first byte is written."""
    head = segments[0] if segments and isinstance(segments[0], bytes) else b""
    try:
        layout = parse_header(head[8:], None)
    except CheckpointError as exc:
        raise ValueError(exc.detail) from None
    kept = {spec.name: spec for _start, _end, spec in layout}
    for name in sorted(kept.keys() | specs.keys()):
        a, b = kept.get(name), specs.get(name)
        if a != b:
            where = {
                "skeleton": f"{a.dtype}{list(a.shape)}" if a else "absent",
                "manifest": f"{b.dtype}{list(b.shape)}" if b else "absent",
            }
            raise ValueError(
                f"tensor {name} is {where['skeleton']} in the skeleton but "
                f"{where['manifest']} in the manifest"
            )
