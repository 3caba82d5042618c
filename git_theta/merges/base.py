"""The interface of merge strategies: how one conflicting parameter becomes one value.

A strategy sees plain float arrays, never git, manifests or the store. The driver
(merge_driver.py) rebuilds the values of one parameter at a time, hands them over, and
casts the result back to the parameter's dtype.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from git_theta.errors import MergeError

# What a strategy may declare in `needs`, beyond `ours` and `theirs`.
NEEDS_BASE = "base"
NEEDS_FISHER = "fisher"


@dataclass(frozen=True)
class MergeInput:
    """The values of one conflicting parameter, as float arrays of one shape and float type.

    The type is float64 for 32- and 64-bit parameters and float32 for 16- and 8-bit ones
    (the driver casts the result back to the parameter's dtype).

    `base` is None when both sides added the parameter. `fisher_ours`/`fisher_theirs` are
    the diagonal Fisher information stored with each side (`git theta add --fisher`), None
    when that side has none.

    A `blockwise` strategy may be given one block of the value instead: flat arrays holding
    elements [offset, offset + len) (C order) of a value of `size` elements. `size` is None
    when the arrays are the whole value (then offset is 0).
    """

    name: str
    ours: np.ndarray
    theirs: np.ndarray
    base: np.ndarray | None = None
    fisher_ours: np.ndarray | None = None
    fisher_theirs: np.ndarray | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    offset: int = 0
    size: int | None = None

    @property
    def total(self) -> int:
        """Elements of the whole value (of which the arrays may be one block)."""
        return self.ours.size if self.size is None else self.size


class MergeStrategy(ABC):
    """Merges one parameter. Subclasses set `name`, `summary`, `needs` and `options`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    needs: ClassVar[frozenset[str]] = frozenset()
    # option name -> what it means (shown by `--help`-like listings and the menu)
    options: ClassVar[Mapping[str, str]] = {}
    # "ours" / "theirs" / "base": the strategy picks one side's stored value as is, so the
    # driver copies that side's manifest entry (it also resolves added/removed conflicts).
    picks: ClassVar[str | None] = None
    # True promises that merging any block of the values (MergeInput.offset/size) gives that
    # block of the whole-value result, bit for bit: the driver then streams the parameter
    # through memory block by block instead of holding whole arrays (merge_stream.py).
    blockwise: ClassVar[bool] = False

    @abstractmethod
    def merge(self, inp: MergeInput) -> np.ndarray:
        """The merged value, same shape as `inp.ours`, as a float array."""

    def check_options(self, options: Mapping[str, str]) -> None:
        """Raise MergeError for an option this strategy does not know."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            known = ", ".join(sorted(self.options)) or "none"
            raise MergeError(
                f"strategy {self.name} has no option {', '.join(unknown)}",
                hint=f"its options: {known}",
            )


# -- helpers shared by the arithmetic strategies ----------------------------------------------


def require_base(inp: MergeInput, strategy: str) -> np.ndarray:
    if inp.base is None:
        raise MergeError(
            f"{strategy} needs the common ancestor of {inp.name}, but both sides added it",
            hint="choose take-ours, take-theirs, average or fisher for it",
        )
    return inp.base


def float_option(inp: MergeInput, key: str, default: float) -> float:
    raw = inp.options.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise MergeError(f"option {key}={raw!r} is not a number") from None
    if not math.isfinite(value):
        raise MergeError(f"option {key}={raw!r} must be a finite number")
    return value


def fraction_option(inp: MergeInput, key: str, default: float) -> float:
    value = float_option(inp, key, default)
    if not 0.0 < value <= 1.0:
        raise MergeError(f"option {key}={value} must be in (0, 1]")
    return value


def weights_option(
    inp: MergeInput, default: tuple[float, float] = (1.0, 1.0)
) -> tuple[float, float]:
    """`weights=a,b`: the weights of ours and theirs (any positive scale)."""
    raw = inp.options.get("weights")
    if raw is None:
        return default
    try:
        a, b = (float(x) for x in raw.split(","))
    except ValueError:
        raise MergeError(
            f"option weights={raw!r} must be two numbers: weights=OURS,THEIRS"
        ) from None
    if not (math.isfinite(a) and math.isfinite(b)) or a < 0 or b < 0 or a + b <= 0:
        raise MergeError(f"option weights={raw!r} must be non-negative with a positive sum")
    return a, b


def seeded_rng(inp: MergeInput, default_seed: int = 0, skip: int = 0) -> np.random.Generator:
    """A generator seeded by the `seed` option and the parameter's name.

    Each parameter gets its own stream, and the same merge always draws the same numbers:
    PCG64 seeded with the first 8 bytes (little-endian) of sha256("<seed>:<name>"). With
    `skip`, the generator starts `skip` 64-bit draws into that stream (PCG64.advance): one
    float64 from `random()` is one draw, so a block can draw exactly its share.
    """
    raw = inp.options.get("seed", str(default_seed))
    try:
        seed = int(raw)
    except ValueError:
        raise MergeError(f"option seed={raw!r} is not an integer") from None
    digest = hashlib.sha256(f"{seed}:{inp.name}".encode()).digest()
    bits = np.random.PCG64(int.from_bytes(digest[:8], "little"))
    if skip:
        bits.advance(skip)
    return np.random.Generator(bits)
