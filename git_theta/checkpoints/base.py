"""The interface every checkpoint format speaks, and the splice skeleton most of them use.

A format turns a byte stream into its tensors, in file order, followed by a *skeleton*:
everything else the file holds (headers, metadata, pickles, archive records), enough to
rebuild the very same bytes once the tensors are given back. Tensor data is handed out as a
memoryview into a reused buffer, valid until the next item is requested.
"""

from __future__ import annotations

import json
import struct
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO, ClassVar, Protocol

from git_theta import dtypes
from git_theta.errors import CheckpointError
from git_theta.streams import ByteSource


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return dtypes.nbytes(self.dtype, self.shape)


@dataclass(frozen=True)
class TensorPart:
    spec: TensorSpec
    data: memoryview


@dataclass(frozen=True)
class SkeletonPart:
    data: bytes


Part = TensorPart | SkeletonPart


class Sink(Protocol):
    def write(self, data: bytes | memoryview, /) -> object: ...


class Payloads(Protocol):
    """Where `join` gets tensor bytes from (the store, when smudging)."""

    def prefetch(self, names: Sequence[str]) -> None:
        """The order in which `write` will be called (lets the source work ahead)."""

    def write(self, name: str, out: Sink) -> None:
        """Write the raw bytes of tensor `name` to `out`."""

    def read(self, name: str) -> bytes:
        """The raw bytes of tensor `name` in memory (formats that must transform them)."""


class CheckpointFormat(ABC):
    name: ClassVar[str]
    # True when a TensorPart's data stays valid until the part after next is requested
    # (streams.ReusableBuffer gives this): clean then encodes one tensor while the next is
    # read. False: the data is valid only until the next part, and clean goes one by one.
    double_buffered: ClassVar[bool] = False

    @abstractmethod
    def sniff(self, head: bytes) -> bool:
        """True when `head` (the first bytes of the content, up to 4 KiB) is this format."""

    @abstractmethod
    def split(self, src: ByteSource, path: str | None) -> Iterator[Part]:
        """Tensors in file order, then exactly one SkeletonPart. Must consume all of `src`.

        Raises CheckpointError (naming `path`) for truncated, corrupt or hostile input.
        """

    @abstractmethod
    def join(
        self, skeleton: bytes, specs: Mapping[str, TensorSpec], payloads: Payloads, out: Sink
    ) -> None:
        """Write the checkpoint rebuilt from its skeleton and tensors to `out`."""

    def respec(self, skeleton: bytes, specs: Mapping[str, TensorSpec]) -> bytes:
        """A skeleton for the same file holding exactly the tensors `specs` describe.

        Used by the merge driver when a merge adds, removes, or changes the dtype or shape
        of parameters. The result must be what `split` would produce for the file that
        `join` writes from it. Formats that cannot do this raise NotImplementedError, and
        the merge stops with a clear error instead.
        """
        raise NotImplementedError


# -- splice skeletons --------------------------------------------------------------------------
#
# Most formats keep tensor bytes verbatim between other bytes (safetensors after its header,
# torch's zip members, uncompressed npz members). Their skeleton is then the list of literal
# byte runs and tensor names in file order, which rebuilds the file byte for byte.

_SPLICE_MAGIC = b"GTSPLICE1"
_U32 = struct.Struct("<I")


def encode_splice(
    segments: Sequence[bytes | str], extra: Mapping[str, object] | None = None
) -> bytes:
    """Pack literal runs (bytes) and tensor names (str), plus optional format data."""
    layout: list[object] = []
    literals = bytearray()
    for seg in segments:
        if isinstance(seg, str):
            layout.append(seg)
        else:
            layout.append(len(seg))
            literals += seg
    head = json.dumps({"layout": layout, "extra": dict(extra or {})}, separators=(",", ":"))
    hb = head.encode()
    return _SPLICE_MAGIC + _U32.pack(len(hb)) + hb + bytes(literals)


def decode_splice(skeleton: bytes) -> tuple[list[bytes | str], dict[str, object]]:
    if not skeleton.startswith(_SPLICE_MAGIC):
        raise ValueError("not a splice skeleton")
    pos = len(_SPLICE_MAGIC)
    (hlen,) = _U32.unpack_from(skeleton, pos)
    pos += 4
    try:
        meta = json.loads(skeleton[pos : pos + hlen])
    except RecursionError:
        raise ValueError("splice skeleton header nested too deeply") from None
    pos += hlen
    segments: list[bytes | str] = []
    for item in meta["layout"]:
        if isinstance(item, str):
            segments.append(item)
        else:
            n = int(item)
            if n < 0 or pos + n > len(skeleton):
                raise ValueError("splice skeleton literal out of range")
            segments.append(skeleton[pos : pos + n])
            pos += n
    if pos != len(skeleton):
        raise ValueError("splice skeleton has trailing bytes")
    return segments, dict(meta["extra"])


def join_splice(segments: Sequence[bytes | str], payloads: Payloads, out: Sink) -> None:
    payloads.prefetch([s for s in segments if isinstance(s, str)])
    for seg in segments:
        if isinstance(seg, str):
            payloads.write(seg, out)
        else:
            out.write(seg)


def write_all(out: BinaryIO, parts: Iterator[bytes | memoryview]) -> None:
    for p in parts:
        out.write(p)


def splice_specs(specs: Sequence[TensorSpec]) -> dict[str, list[object]]:
    """What a skeleton expects of each tensor (dtype, shape), for `check_splice_specs`."""
    return {s.name: [s.dtype, list(s.shape)] for s in specs}


def check_splice_specs(expected: object, specs: Mapping[str, TensorSpec]) -> None:
    """Refuse to join tensors whose dtype or shape differ from what the skeleton's own
    bytes (a pickle, a header) describe: the file would be silently inconsistent."""
    if not isinstance(expected, dict):
        return
    for name, spec in specs.items():
        want = expected.get(name)
        if want is not None and [spec.dtype, list(spec.shape)] != want:
            raise CheckpointError(
                None,
                f"tensor {name} is {spec.dtype}{list(spec.shape)} in the manifest but the "
                f"file's own header describes {want[0]}{want[1]}, so it cannot be rebuilt",
                hint="this update or merge changed a dtype or shape the format cannot change",
            )
