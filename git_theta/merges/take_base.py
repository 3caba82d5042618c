"""`take-base`: go back to the common ancestor's value."""

from __future__ import annotations

import numpy as np

from git_theta.merges.base import NEEDS_BASE, MergeInput, MergeStrategy, require_base


class TakeBase(MergeStrategy):
    name = "take-base"
    summary = "revert to the common ancestor's value"
    needs = frozenset({NEEDS_BASE})
    picks = "base"
    blockwise = True

    def merge(self, inp: MergeInput) -> np.ndarray:
        return require_base(inp, self.name)
