"""`low-rank`: W = base + scale * B @ A, the shape of a LoRA update.

Record: {"type": "low-rank", "base": {...}, "rank": r, "factor_dtype": "F32", "scale": s,
"transpose": false, "a_oid", "a_size", "b_oid", "b_size"}. A is (r, in) and B is (out, r)
for a weight of shape (out, in); with "transpose" (PEFT's fan_in_fan_out, GPT-2's Conv1D)
the weight is (in, out) and receives (B @ A) transposed. `scale` is a JSON number (Python's
float repr round-trips exactly).

The arithmetic is pinned down so every machine rebuilds the same bits: no BLAS (whose
summation order depends on the CPU and thread count). The product is accumulated rank by
rank in float64 with plain element-wise numpy operations (each IEEE-rounded, no FMA
contraction), scaled, added to the base widened to float64, and rounded once to the
parameter's dtype. `git theta add --update-type low-rank` writes the working tree through
this same function, so what was added is what every checkout rebuilds.
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

BLOCK_ELEMENTS = 1 << 22  # float64 scratch per block: 32 MiB


def factor_shapes(
    shape: tuple[int, ...], rank: int, transpose: bool
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Shapes of A and B for a weight of `shape`."""
    out, inp = (shape[1], shape[0]) if transpose else (shape[0], shape[1])
    return (rank, inp), (out, rank)


def apply_low_rank(
    base: bytes | memoryview,
    dtype: str,
    shape: tuple[int, ...],
    a: np.ndarray,
    b: np.ndarray,
    scale: float,
    transpose: bool = False,
) -> bytes:
    """The raw bytes of base + scale * B @ A (transposed if asked), bit-reproducible."""
    view = memoryview(base).cast("B")
    step = block_bytes(dtype, shape)
    blocks = (view[i : i + step] for i in range(0, len(view), step))
    return b"".join(low_rank_blocks(blocks, dtype, shape, a, b, scale, transpose))


def block_bytes(dtype: str, shape: tuple[int, ...]) -> int:
    """Bytes of the row blocks `low_rank_blocks` and `ia3_blocks` take: whole stored rows,
    about BLOCK_ELEMENTS elements (their float64 scratch is ~32 MiB)."""
    row = dtypes.nbytes(dtype, shape[1:])
    cols = max(1, dtypes.numel(shape[1:]))
    return max(1, row) * max(1, BLOCK_ELEMENTS // cols)


def low_rank_blocks(
    blocks: Iterable[bytes | memoryview],
    dtype: str,
    shape: tuple[int, ...],
    a: np.ndarray,
    b: np.ndarray,
    scale: float,
    transpose: bool = False,
) -> Iterator[bytes]:
    """`apply_low_rank` over the base given in blocks of whole stored rows, block by block.

    Every output element is computed by the same IEEE operations in the same order whatever
    the blocks (accumulated over the rank from zero, scaled, base added, rounded once), so
    the bits do not depend on how the base is cut.
    """
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rank = a64.shape[0]
    cols = shape[1]
    start = 0
    for block in blocks:
        n = len(block) // max(1, dtypes.nbytes(dtype, (cols,)))
        w = arrays.to_float(block, dtype, (n, cols))
        stop = start + n
        acc = np.zeros((n, cols), dtype=np.float64)
        for k in range(rank):
            if transpose:  # stored rows are the input features: (B @ A)^T[start:stop]
                acc += a64[k, start:stop, None] * b64[None, :, k]
            else:
                acc += b64[start:stop, k : k + 1] * a64[k : k + 1, :]
        acc *= scale
        acc += w
        yield arrays.from_float(acc, dtype)
        start = stop


class LowRankUpdate(UpdateType):
    name = "low-rank"

    @staticmethod
    def candidate(
        base_record: Record,
        a: bytes,
        b: bytes,
        factor_dtype: str,
        rank: int,
        scale: float,
        transpose: bool,
    ) -> Candidate:
        group = dtypes.get(factor_dtype).itemsize
        record = {
            "type": "low-rank",
            "base": base_record,
            "rank": rank,
            "factor_dtype": factor_dtype,
            "scale": float(scale),
            "transpose": bool(transpose),
        }
        return Candidate(record, {"a": encode_bytes(a, group), "b": encode_bytes(b, group)})

    def chunks(
        self, record: Record, spec: ValueSpec, store: Store, resolve: Resolver
    ) -> Iterator[bytes | memoryview]:
        rank, fdt, scale = record.get("rank"), record.get("factor_dtype"), record.get("scale")
        transpose = record.get("transpose", False)
        if (
            len(spec.shape) != 2
            or not isinstance(rank, int)
            or rank < 1
            or fdt not in dtypes.DTYPES
            or not dtypes.get(str(fdt)).is_float
            or not isinstance(scale, (int, float))
            or not isinstance(transpose, bool)
        ):
            raise UpdateError(f"{spec.name}: low-rank record is malformed")
        a_shape, b_shape = factor_shapes(spec.shape, rank, transpose)
        a = load_value_bytes(store, record, "a", str(fdt), a_shape, spec)
        b = load_value_bytes(store, record, "b", str(fdt), b_shape, spec)
        blocks = base_stream(record, spec, resolve, block_bytes(spec.dtype, spec.shape))
        yield from low_rank_blocks(
            blocks,
            spec.dtype,
            spec.shape,
            arrays.to_float(a, str(fdt), a_shape),
            arrays.to_float(b, str(fdt), b_shape),
            float(scale),
            transpose,
        )
