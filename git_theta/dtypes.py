"""Tensor element types, named as safetensors names them.

The core moves tensors as raw little-endian bytes plus one of these names, so it never
needs torch; conversion to numpy for arithmetic is in `arrays`. This module does not import
numpy: the filter process reads, hashes and re-uses unchanged tensors without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class DType:
    name: str  # safetensors spelling: F32, BF16, I64, BOOL, F8_E4M3, ...
    itemsize: int
    kind: str  # "float", "int", "uint", "bool"
    numpy: str | None  # numpy dtype string when numpy has the type natively

    @property
    def is_float(self) -> bool:
        return self.kind == "float"


_ALL = [
    DType("F64", 8, "float", "<f8"),
    DType("F32", 4, "float", "<f4"),
    DType("F16", 2, "float", "<f2"),
    DType("BF16", 2, "float", None),
    DType("F8_E4M3", 1, "float", None),
    DType("F8_E5M2", 1, "float", None),
    DType("I64", 8, "int", "<i8"),
    DType("I32", 4, "int", "<i4"),
    DType("I16", 2, "int", "<i2"),
    DType("I8", 1, "int", "i1"),
    DType("U64", 8, "uint", "<u8"),
    DType("U32", 4, "uint", "<u4"),
    DType("U16", 2, "uint", "<u2"),
    DType("U8", 1, "uint", "u1"),
    DType("BOOL", 1, "bool", "?"),
    DType("C64", 8, "complex", "<c8"),
    DType("C128", 16, "complex", "<c16"),
]
DTYPES: dict[str, DType] = {d.name: d for d in _ALL}

# Largest tensor the parsers accept, in elements: bounds allocation for hostile headers.
MAX_ELEMENTS = 1 << 40


def get(name: str) -> DType:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}") from None


def numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    return numel(shape) * get(dtype).itemsize
