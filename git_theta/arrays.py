"""Raw tensor bytes <-> numpy arrays, by dtype name (see `dtypes`).

Types numpy lacks (bf16, fp8) are widened to float32 when arithmetic needs them and rounded
back (to nearest even, as torch does) when results are stored.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import numpy.typing as npt

from git_theta.dtypes import DTYPES, get


def from_numpy(dt: npt.DTypeLike) -> str:
    """The name of a numpy dtype (little-endian or byte-order-free types only)."""
    d = np.dtype(dt)
    for t in DTYPES.values():
        if t.numpy is not None and np.dtype(t.numpy) == d:
            return t.name
    raise ValueError(f"numpy dtype {d} has no git-theta equivalent")


@cache
def _fp8_table(name: str) -> np.ndarray:
    """float32 value of each of the 256 bit patterns of an fp8 type (OCP FP8, as torch)."""
    exp_bits, man_bits, bias = (4, 3, 7) if name == "F8_E4M3" else (5, 2, 15)
    out = np.empty(256, dtype=np.float32)
    for code in range(256):
        sign = -1.0 if code & 0x80 else 1.0
        exp = (code >> man_bits) & ((1 << exp_bits) - 1)
        man = code & ((1 << man_bits) - 1)
        if name == "F8_E4M3" and exp == 0xF and man == 0x7:
            out[code] = np.nan
        elif name == "F8_E5M2" and exp == 0x1F:
            out[code] = sign * np.inf if man == 0 else np.nan
        elif exp == 0:
            out[code] = sign * (man / (1 << man_bits)) * 2.0 ** (1 - bias)
        else:
            out[code] = sign * (1 + man / (1 << man_bits)) * 2.0 ** (exp - bias)
    return out


def to_numpy(
    data: bytes | bytearray | memoryview, dtype: str, shape: tuple[int, ...]
) -> np.ndarray:
    """A numpy view (or, for bf16/fp8, a float32 copy) of raw tensor bytes."""
    d = get(dtype)
    if d.numpy is not None:
        return np.frombuffer(data, dtype=d.numpy).reshape(shape)
    raw = np.frombuffer(data, dtype=np.uint8 if d.itemsize == 1 else np.uint16)
    if dtype == "BF16":
        return (raw.astype(np.uint32) << 16).view(np.float32).reshape(shape)
    out: np.ndarray = _fp8_table(dtype)[raw].reshape(shape)
    return out


def to_float(
    data: bytes | bytearray | memoryview, dtype: str, shape: tuple[int, ...]
) -> np.ndarray:
    """Values as float64 (float dtypes and ints alike), for statistics and merges."""
    return to_numpy(data, dtype, shape).astype(np.float64)


def _round_bf16(values: np.ndarray) -> np.ndarray:
    f = np.ascontiguousarray(values, dtype=np.float32)
    bits = f.view(np.uint32).astype(np.uint64)
    # round to nearest even, as torch does; NaN stays NaN
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    out = rounded.astype(np.uint16)
    nan = np.isnan(f)
    out[nan] = 0x7FC0
    return out


def from_float(values: np.ndarray, dtype: str) -> bytes:
    """Cast values (any float array) to `dtype` and return the raw little-endian bytes."""
    d = get(dtype)
    if d.numpy is not None:
        if d.kind in ("int", "uint"):
            values = np.rint(values)
        return np.ascontiguousarray(values.astype(d.numpy)).tobytes()
    if dtype == "BF16":
        return _round_bf16(values).tobytes()
    table = _fp8_table(dtype)
    finite = np.where(np.isfinite(table), table, np.inf)
    order = np.argsort(finite, kind="stable")
    v = np.asarray(values, dtype=np.float32).ravel()
    idx = np.searchsorted(finite[order], v).clip(1, 255)
    lo, hi = order[idx - 1], order[idx]
    pick = np.where(np.abs(v - table[lo]) <= np.abs(table[hi] - v), lo, hi)
    return bytes(pick.astype(np.uint8).tobytes())
