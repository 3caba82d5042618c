"""`dare`: drop and rescale (Yu et al., 2024), then task arithmetic.

Each element of each delta d_i = theta_i - base is kept with probability `density` and
divided by it (so its expectation is unchanged), else dropped; theta = base + scale * (kept
d_ours + kept d_theirs). The masks come from a generator seeded by `seed` and the
parameter's name (see merges.base.seeded_rng), ours' mask drawn first (draws 0 to n-1 of
the stream), then theirs' (draws n to 2n-1): the same merge always gives the same result.
A block of the value draws exactly its share of both masks, so it merges block-wise.
"""

from __future__ import annotations

import numpy as np

from git_theta.merges.base import (
    NEEDS_BASE,
    MergeInput,
    MergeStrategy,
    float_option,
    fraction_option,
    require_base,
    seeded_rng,
)


class Dare(MergeStrategy):
    name = "dare"
    summary = "randomly drop delta elements (seeded), rescale by 1/density, add to base"
    needs = frozenset({NEEDS_BASE})
    options = {
        "density": "probability of keeping a delta element (default 0.5)",
        "scale": "multiplier of the summed deltas (default 1)",
        "seed": "integer seed (default 0)",
    }
    blockwise = True

    def merge(self, inp: MergeInput) -> np.ndarray:
        base = require_base(inp, self.name)
        density = fraction_option(inp, "density", 0.5)
        scale = float_option(inp, "scale", 1.0)
        total = np.zeros_like(base)
        for k, side in enumerate((inp.ours, inp.theirs)):
            rng = seeded_rng(inp, skip=k * inp.total + inp.offset)
            keep = rng.random(base.shape) < density
            total += np.where(keep, (side - base) / density, 0.0)
        return base + scale * total
