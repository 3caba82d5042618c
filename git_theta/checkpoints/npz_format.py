"""numpy .npz archives (np.savez, np.savez_compressed), read without np.load.

An .npz is a zip of `<key>.npy` members: a small text header (dtype, shape, order) and
the raw array. Each numeric array becomes a parameter named `<key>`. The skeleton is the
file with the array data cut out:

- stored members (np.savez): the data is spliced out; the file comes back byte-identical.
- deflated members (np.savez_compressed): on split the member is inflated and deflated
  again at zlib level 6 (what zipfile, hence numpy, uses); when that reproduces the stored
  bytes, as it does for files written by the same zlib, only the .npy header is kept and
  join deflates again, so the file comes back byte-identical too. Otherwise the
  compressed member stays verbatim in the skeleton (identical bytes, no deduplication).
- arrays in Fortran order or big-endian are handed out as C-order little-endian tensors
  and converted back on join.
- object arrays are refused (loading them needs pickle, which git-theta never runs);
  other arrays with no tensor dtype (strings, structured, datetimes) stay verbatim.
"""

from __future__ import annotations

import ast
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import blake3

from git_theta import dtypes
from git_theta.checkpoints import ziparchive
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
    splice_specs,
)
from git_theta.errors import CheckpointError
from git_theta.streams import ByteSource, ReusableBuffer

if TYPE_CHECKING:
    import numpy as np

# numpy is imported where it is used: format detection loads every format plugin, and a
# filter process that only re-hashes a safetensors file should not pay for numpy

NPY_MAGIC = b"\x93NUMPY"
MAX_HEADER = 1 << 20
MAX_LITERAL = 1 << 30
LEVEL = 6  # zlib.Z_DEFAULT_COMPRESSION, what zipfile and so np.savez_compressed use
DEFLATE_RATIO = 1100  # deflate cannot expand data more than ~1032:1
CHUNK = 1 << 20


@dataclass(frozen=True)
class Npy:
    """What a .npy header says: the file's dtype, the shape, the order, the header length."""

    header_len: int
    descr: str
    shape: tuple[int, ...]
    fortran: bool
    dtype: str | None  # git-theta dtype name, None when not a tensor

    @property
    def nbytes(self) -> int:
        import numpy as np

        return int(np.dtype(self.descr).itemsize) * dtypes.numel(self.shape)

    @property
    def converted(self) -> bool:
        """True when the file bytes are not the C-order little-endian tensor bytes."""
        import numpy as np

        big = np.dtype(self.descr).byteorder == ">"
        return big or (self.fortran and sum(d > 1 for d in self.shape) > 1)


def npy_header_size(prefix: bytes, where: str, path: str | None) -> int:
    """The length of the .npy header (magic to the end of the dict) from its first 12 bytes."""
    if len(prefix) < 10 or not prefix.startswith(NPY_MAGIC):
        raise CheckpointError(path, f"{where} is not a .npy array")
    if prefix[6] == 1:
        return 10 + int(struct.unpack_from("<H", prefix, 8)[0])
    if prefix[6] in (2, 3) and len(prefix) >= 12:
        hlen = int(struct.unpack_from("<I", prefix, 8)[0])
        if hlen > MAX_HEADER:
            raise CheckpointError(path, f"{where}: .npy header of {hlen} bytes is too large")
        return 12 + hlen
    raise CheckpointError(path, f"{where}: unknown .npy version {prefix[6]}")


def parse_npy_header(raw: bytes, where: str, path: str | None) -> Npy:
    """The header that `raw` holds (exactly npy_header_size bytes)."""
    import numpy as np

    size = npy_header_size(raw[:12], where, path)
    if len(raw) < size:
        raise CheckpointError(path, f"{where}: truncated .npy header")
    major = raw[6]
    start = 10 if major == 1 else 12
    hlen = size - start
    text = raw[start : start + hlen].decode("utf-8" if major == 3 else "latin-1", "replace")
    try:
        d = ast.literal_eval(text)  # literals only: never evaluates code
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise CheckpointError(path, f"{where}: unreadable .npy header") from None
    if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
        raise CheckpointError(path, f"{where}: .npy header lacks descr/fortran_order/shape")
    shape, fortran, descr = d["shape"], d["fortran_order"], d["descr"]
    if (
        not isinstance(shape, tuple)
        or len(shape) > 64
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
        or dtypes.numel(shape) > dtypes.MAX_ELEMENTS
    ):
        raise CheckpointError(path, f"{where}: bad shape {shape!r:.80}")
    if not isinstance(fortran, bool):
        raise CheckpointError(path, f"{where}: bad fortran_order")
    try:
        dt = np.dtype(descr) if isinstance(descr, str) else np.dtype([tuple(f) for f in descr])
    except Exception:  # numpy rejects a malformed descr in many ways
        raise CheckpointError(path, f"{where}: unknown dtype {descr!r:.80}") from None
    if dt.hasobject:
        raise CheckpointError(
            path,
            f"{where} is an object array, which only pickle can load; git-theta never runs pickle",
            hint="save numeric arrays only (np.savez without allow_pickle objects)",
        )
    name = _tensor_dtype(dt)
    return Npy(start + hlen, dt.str if name else str(descr), shape, fortran, name)


def _tensor_dtype(dt: np.dtype[Any]) -> str | None:
    from git_theta import arrays  # imports numpy: see the note at the top

    if dt.fields is not None or dt.subdtype is not None:
        return None
    try:
        return arrays.from_numpy(dt.newbyteorder("<") if dt.byteorder == ">" else dt)
    except ValueError:
        return None


def to_tensor_bytes(data: memoryview | bytes, npy: Npy, dtype: str) -> memoryview:
    """C-order little-endian bytes of an array stored in Fortran order and/or big-endian."""
    import numpy as np

    arr = np.frombuffer(data, dtype=npy.descr).reshape(npy.shape, order="F" if npy.fortran else "C")
    out = np.ascontiguousarray(arr, dtype=dtypes.get(dtype).numpy)
    return memoryview(out.reshape(-1).view(np.uint8))  # type: ignore[arg-type]


def to_file_bytes(data: bytes, descr: str, fortran: bool, shape: list[int]) -> bytes:
    """The inverse of to_tensor_bytes."""
    import numpy as np

    dt = np.dtype(descr)
    arr = np.frombuffer(data, dtype=dt.newbyteorder("<") if dt.byteorder == ">" else dt)
    return arr.reshape(shape).astype(dt).tobytes(order="F" if fortran else "C")


# -- inflating a member, checking that deflating it again gives the same bytes -----------------


class _Inflater:
    def __init__(self, arc: ziparchive.Archive, m: ziparchive.Member, path: str | None) -> None:
        if m.file_size > DEFLATE_RATIO * m.compress_size + 1024:
            raise CheckpointError(path, f"zip member {m.name} claims an impossible size")
        self.arc, self.m, self.path = arc, m, path
        self.d = zlib.decompressobj(-15)
        self.pos = m.data_start
        self.out = 0
        self.crc = 0
        self.redo = zlib.compressobj(LEVEL, zlib.DEFLATED, -15)
        self.checked = 0  # compressed bytes matched so far
        self.same = True

    def _piece(self, limit: int) -> bytes:
        while True:
            tail = self.d.unconsumed_tail
            if self.d.eof:
                raise CheckpointError(self.path, f"zip member {self.m.name} ends early")
            if tail:
                try:
                    data = self.d.decompress(tail, limit)
                except zlib.error as exc:
                    raise CheckpointError(self.path, f"zip member {self.m.name}: {exc}") from None
                if not data and len(self.d.unconsumed_tail) >= len(tail):
                    raise CheckpointError(self.path, f"zip member {self.m.name}: stuck stream")
            elif self.pos < self.m.data_end and not self.d.eof:
                chunk = self.arc.read(self.pos, min(self.m.data_end, self.pos + CHUNK))
                self.pos += len(chunk)
                try:
                    data = self.d.decompress(chunk, limit)
                except zlib.error as exc:
                    raise CheckpointError(self.path, f"zip member {self.m.name}: {exc}") from None
            else:
                raise CheckpointError(self.path, f"zip member {self.m.name} ends early")
            if data:
                self._account(data)
                return data

    def _account(self, data: bytes) -> None:
        self.out += len(data)
        if self.out > self.m.file_size:
            raise CheckpointError(self.path, f"zip member {self.m.name} inflates past its size")
        self.crc = zlib.crc32(data, self.crc)
        if self.same:
            self._compare(self.redo.compress(data))

    def _compare(self, again: bytes) -> None:
        if not again or not self.same:
            return
        start = self.m.data_start + self.checked
        end = start + len(again)
        self.same = end <= self.m.data_end and self.arc.read(start, end) == again
        self.checked += len(again)

    def read(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            out += self._piece(n - len(out))
        return bytes(out)

    def read_into(self, view: memoryview) -> None:
        got = 0
        while got < len(view):
            piece = self._piece(min(CHUNK, len(view) - got))
            view[got : got + len(piece)] = piece
            got += len(piece)

    def finish(self) -> bool:
        """Check the member ended where it should; True when deflating reproduced it."""
        try:
            tail = self.d.unconsumed_tail + self.arc.read(self.pos, self.m.data_end)
            rest = self.d.decompress(tail, 1)  # one byte is enough to know there is more
        except zlib.error as exc:
            raise CheckpointError(self.path, f"zip member {self.m.name}: {exc}") from None
        if rest or not self.d.eof or self.d.unused_data or self.out != self.m.file_size:
            raise CheckpointError(
                self.path, f"zip member {self.m.name} does not inflate to its declared size"
            )
        if self.crc != self.m.crc:
            raise CheckpointError(self.path, f"zip member {self.m.name} fails its CRC check")
        self._compare(self.redo.flush())
        return self.same and self.checked == self.m.compress_size


# -- the format --------------------------------------------------------------------------------


class NpzFormat(CheckpointFormat):
    name = "npz"
    double_buffered = True  # one ReusableBuffer view (or a fresh array) per tensor

    def sniff(self, head: bytes) -> bool:
        first = ziparchive.first_member_name(head)
        return first is not None and first.endswith(".npy")

    def split(self, src: ByteSource, path: str | None) -> Iterator[Part]:
        if not src.peek(4).startswith(ziparchive.ZIP_MAGIC):
            src.drain()
            raise CheckpointError(path, "is not an .npz (zip) archive")
        with ziparchive.spooled(src, path) as arc:
            yield from _Splitter(arc, path).parts()

    def join(
        self, skeleton: bytes, specs: Mapping[str, TensorSpec], payloads: Payloads, out: Sink
    ) -> None:
        segments, extra = decode_splice(skeleton)
        check_splice_specs(extra.get("specs"), specs)
        convert: dict[str, Any] = dict(extra.get("convert", {}))  # type: ignore[call-overload]
        deflate: dict[str, Any] = dict(extra.get("deflate", {}))  # type: ignore[call-overload]
        payloads.prefetch([s for s in segments if isinstance(s, str)])
        for seg in segments:
            if isinstance(seg, bytes):
                out.write(seg)
            elif seg in deflate:
                _write_deflated(seg, deflate[seg], convert.get(seg), payloads, out)
            elif seg in convert:
                out.write(to_file_bytes(payloads.read(seg), *convert[seg]))
            else:
                payloads.write(seg, out)


class _Collect:
    def __init__(self, c: Any) -> None:
        self.c = c
        self.parts: list[bytes] = []

    def write(self, data: bytes | memoryview) -> None:
        self.parts.append(self.c.compress(data))


def _write_deflated(
    name: str,
    info: dict[str, Any],
    conv: list[Any] | None,
    payloads: Payloads,
    out: Sink,
) -> None:
    """Deflate .npy header + data again; the result must be the bytes split checked."""
    sink = _Collect(zlib.compressobj(int(info["level"]), zlib.DEFLATED, -15))
    sink.write(bytes.fromhex(info["header"]))
    if conv is not None:
        sink.write(to_file_bytes(payloads.read(name), *conv))
    else:
        payloads.write(name, sink)
    sink.parts.append(sink.c.flush())
    n = sum(len(p) for p in sink.parts)
    if n != info["size"] or _hash(iter(sink.parts)) != info["blake3"]:
        raise CheckpointError(
            None,
            f"array {name}: deflating it again on this machine (zlib "
            f"{zlib.ZLIB_RUNTIME_VERSION}) does not give the bytes stored (zlib "
            f"{info.get('zlib')}), so the .npz cannot be rebuilt identically",
            hint="check it out where the zlib matches, or re-save the array uncompressed",
        )
    for p in sink.parts:
        out.write(p)


def _hash(chunks: Iterator[bytes]) -> str:
    h = blake3.blake3()
    for c in chunks:
        h.update(c)
    return str(h.hexdigest())


class _Splitter:
    def __init__(self, arc: ziparchive.Archive, path: str | None) -> None:
        self.arc, self.path = arc, path
        self.segments: list[bytes | str] = []
        self.pos = 0  # file bytes up to here are in segments
        self.literal = 0
        self.convert: dict[str, list[Any]] = {}
        self.deflate: dict[str, dict[str, Any]] = {}
        self.buf = ReusableBuffer()
        self.specs: list[TensorSpec] = []

    def _cut(self, start: int, name: str, resume: int) -> None:
        self.literal += start - self.pos
        if self.literal > MAX_LITERAL:
            raise CheckpointError(self.path, f"holds over {MAX_LITERAL} bytes outside its arrays")
        self.segments += [self.arc.read(self.pos, start), name]
        self.pos = resume

    def parts(self) -> Iterator[Part]:
        for m in self.arc.members:
            if not m.name.endswith(".npy"):
                continue
            name = m.name[: -len(".npy")] or "arr"
            if m.compress_type == ziparchive.STORED:
                part = self._stored(m, name)
            elif m.compress_type == ziparchive.DEFLATED:
                part = self._deflated(m, name)
            else:
                raise CheckpointError(
                    self.path, f"zip member {m.name} uses compression method {m.compress_type}"
                )
            if part is not None:
                yield part
        self.literal += self.arc.size - self.pos
        if self.literal > MAX_LITERAL:
            raise CheckpointError(self.path, f"holds over {MAX_LITERAL} bytes outside its arrays")
        self.segments.append(self.arc.read(self.pos, self.arc.size))
        extra: dict[str, object] = {"specs": splice_specs(self.specs)}
        if self.convert:
            extra["convert"] = self.convert
        if self.deflate:
            extra["deflate"] = self.deflate
        yield SkeletonPart(encode_splice(self.segments, extra))

    def _header(self, raw: bytes, m: ziparchive.Member) -> Npy | None:
        """The header of a tensor member; None for arrays that are not tensors."""
        npy = parse_npy_header(raw, m.name, self.path)
        if npy.dtype is not None and npy.header_len + npy.nbytes != m.file_size:
            raise CheckpointError(
                self.path,
                f"zip member {m.name} holds {m.file_size - npy.header_len} bytes of data but "
                f"its header describes {npy.nbytes}",
            )
        return npy if npy.dtype is not None else None

    def _tensor(self, name: str, npy: Npy, view: memoryview) -> TensorPart:
        assert npy.dtype is not None
        spec = TensorSpec(name, npy.dtype, npy.shape)
        self.specs.append(spec)
        if npy.converted:
            self.convert[name] = [npy.descr, npy.fortran, list(npy.shape)]
            return TensorPart(spec, to_tensor_bytes(view, npy, npy.dtype))
        return TensorPart(spec, view)

    def _stored(self, m: ziparchive.Member, name: str) -> TensorPart | None:
        prefix = self.arc.read(m.data_start, min(m.data_end, m.data_start + 12))
        total = npy_header_size(prefix, m.name, self.path)
        npy = self._header(self.arc.read(m.data_start, min(m.data_end, m.data_start + total)), m)
        if npy is None:
            return None
        start = m.data_start + npy.header_len
        self._cut(start, name, m.data_end)
        view = self.buf.view(npy.nbytes)
        self.arc.read_into(start, view)
        return self._tensor(name, npy, view)

    def _deflated(self, m: ziparchive.Member, name: str) -> TensorPart | None:
        inf = _Inflater(self.arc, m, self.path)
        raw = inf.read(min(12, m.file_size))
        total = npy_header_size(raw, m.name, self.path)
        if total > m.file_size:
            raise CheckpointError(self.path, f"zip member {m.name}: truncated .npy header")
        raw += inf.read(max(0, total - len(raw)))
        npy = self._header(raw[:total], m)
        if npy is None:
            return None
        view = self.buf.view(npy.nbytes)
        early = raw[total:]  # data bytes read along with a very short header
        view[: len(early)] = early
        inf.read_into(view[len(early) :])
        if inf.finish():
            self._cut(m.data_start, name, m.data_end)
            self.deflate[name] = {
                "level": LEVEL,
                "header": raw[:total].hex(),
                "size": m.compress_size,
                "blake3": _hash(self.arc.chunks(m.data_start, m.data_end)),
                "zlib": zlib.ZLIB_RUNTIME_VERSION,
            }
        return self._tensor(name, npy, view)
