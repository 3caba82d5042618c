"""`task-arithmetic`: add both task vectors to the base (Ilharco et al., 2023).

theta = base + scale * ((ours - base) + (theirs - base)).
"""

from __future__ import annotations

import numpy as np

from git_theta.merges.base import NEEDS_BASE, MergeInput, MergeStrategy, float_option, require_base


class TaskArithmetic(MergeStrategy):
    name = "task-arithmetic"
    summary = "base + scale * ((ours - base) + (theirs - base))"
    needs = frozenset({NEEDS_BASE})
    options = {"scale": "multiplier of the summed deltas (default 1)"}
    blockwise = True

    def merge(self, inp: MergeInput) -> np.ndarray:
        base = require_base(inp, self.name)
        scale = float_option(inp, "scale", 1.0)
        out: np.ndarray = base + scale * ((inp.ours - base) + (inp.theirs - base))
        return out
