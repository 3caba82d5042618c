"""Driving a checkpoint format's split/join in memory, shared by the format unit tests."""

from __future__ import annotations

import io

from git_theta.checkpoints.base import CheckpointFormat, SkeletonPart, TensorSpec
from git_theta.streams import ByteSource


class DictPayloads:
    """Tensor bytes for `join` from a plain dict."""

    def __init__(self, tensors: dict[str, bytes]) -> None:
        self.tensors = tensors

    def prefetch(self, names: object) -> None:
        pass

    def write(self, name: str, out: io.BytesIO) -> None:
        out.write(self.tensors[name])

    def read(self, name: str) -> bytes:
        return self.tensors[name]


def split_with(
    fmt: CheckpointFormat, data: bytes, path: str
) -> tuple[list[TensorSpec], dict[str, bytes], bytes]:
    """(specs in file order, raw bytes by name, skeleton) of checkpoint `data`."""
    specs, tensors, skeleton = [], {}, b""
    for part in fmt.split(ByteSource(io.BytesIO(data)), path):
        if isinstance(part, SkeletonPart):
            skeleton = part.data
        else:
            specs.append(part.spec)
            tensors[part.spec.name] = bytes(part.data)
    return specs, tensors, skeleton
