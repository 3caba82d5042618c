"""`ia3`: W = base * l, a learned vector scaling the rows or the columns of a weight.

Record: {"type": "ia3", "base": {...}, "axis": 0 | 1, "vector_dtype": "F32", "length": n,
"vector_oid", "vector_size"}. axis 0 scales rows (output features: W[i, :] * l[i], PEFT's
convention for attention modules, whose vector has shape (out, 1)); axis 1 scales columns
(input features: W[:, j] * l[j], PEFT's feed-forward modules, vector shape (1, in)).
A 1-D parameter is scaled element-wise (axis 0).

Products are taken in float64 (exact for 16- and 32-bit floats) and rounded once to the
parameter's dtype, so the result is the same bits on every machine.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from git_theta import arrays, dtypes
from git_theta.errors import UpdateError
from git_theta.store import Store
from git_theta.updates.base import Record, Resolver, UpdateType, ValueSpec
from git_theta.updates.incremental import (
    Candidate,
    base_stream,
    encode_bytes,
    load_value_bytes,
)
from git_theta.updates.low_rank import block_bytes


def apply_ia3(
    base: bytes | memoryview, dtype: str, shape: tuple[int, ...], vector: np.ndarray, axis: int
) -> bytes:
    """The raw bytes of base scaled by `vector` along `axis` (0: rows, 1: columns)."""
    view = memoryview(base).cast("B")
    step = block_bytes(dtype, shape)
    blocks = (view[i : i + step] for i in range(0, len(view), step))
    return b"".join(ia3_blocks(blocks, dtype, shape, vector, axis))


def ia3_blocks(
    blocks: Iterable[bytes | memoryview],
    dtype: str,
    shape: tuple[int, ...],
    vector: np.ndarray,
    axis: int,
) -> Iterator[bytes]:
    """`apply_ia3` over the base given in blocks of whole stored rows (elements of a 1-D
    parameter), block by block: one product per element, so the bits match."""
    v = np.asarray(vector, dtype=np.float64).reshape(-1)
    row = shape[1:]
    start = 0
    for block in blocks:
        n = len(block) // max(1, dtypes.nbytes(dtype, row))
        w = arrays.to_float(block, dtype, (n, *row))
        if len(shape) == 1 or axis == 0:
            scale = v[start : start + n]
            out = w * (scale if len(shape) == 1 else scale[:, None])
        else:
            out = w * v[None, :]
        yield arrays.from_float(out, dtype)
        start += n


class IA3Update(UpdateType):
    name = "ia3"

    @staticmethod
    def candidate(base_record: Record, vector: bytes, vector_dtype: str, axis: int) -> Candidate:
        group = dtypes.get(vector_dtype).itemsize
        record = {
            "type": "ia3",
            "base": base_record,
            "axis": axis,
            "vector_dtype": vector_dtype,
            "length": len(vector) // group,
        }
        return Candidate(record, {"vector": encode_bytes(vector, group)})

    def chunks(
        self, record: Record, spec: ValueSpec, store: Store, resolve: Resolver
    ) -> Iterator[bytes | memoryview]:
        axis, vdt, length = record.get("axis"), record.get("vector_dtype"), record.get("length")
        if (
            len(spec.shape) not in (1, 2)
            or axis not in (0, 1)
            or (len(spec.shape) == 1 and axis != 0)
            or vdt not in dtypes.DTYPES
            or not dtypes.get(str(vdt)).is_float
            or length != spec.shape[int(axis)]
        ):
            raise UpdateError(f"{spec.name}: ia3 record does not fit {list(spec.shape)}")
        vec = load_value_bytes(store, record, "vector", str(vdt), (int(length),), spec)
        v = arrays.to_float(vec, str(vdt), (int(length),))
        blocks = base_stream(record, spec, resolve, block_bytes(spec.dtype, spec.shape))
        yield from ia3_blocks(blocks, spec.dtype, spec.shape, v, int(axis))
