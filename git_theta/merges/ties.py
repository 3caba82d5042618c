"""`ties`: TIES-merging (Yadav et al., 2023): trim, elect sign, disjoint mean.

1. trim: in each delta d_i = theta_i - base keep the `density` fraction of elements with the
   largest magnitude (ties at the threshold kept), zero the rest;
2. elect: per element, the sign of the sum of the trimmed deltas;
3. disjoint mean: average the trimmed deltas whose sign agrees with the elected one
   (zeros excluded); theta = base + scale * that mean.
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
)


def trim(delta: np.ndarray, density: float) -> np.ndarray:
    """`delta` with all but its top `density` fraction of magnitudes set to zero."""
    if density >= 1.0 or delta.size == 0:
        return delta
    k = max(1, int(np.ceil(density * delta.size)))
    mags = np.abs(delta).ravel()
    threshold = np.partition(mags, mags.size - k)[mags.size - k]
    return np.where(np.abs(delta) >= threshold, delta, 0.0)


class Ties(MergeStrategy):
    name = "ties"
    summary = "trim each delta to its top density, elect signs, average agreeing deltas"
    needs = frozenset({NEEDS_BASE})
    options = {
        "density": "fraction of each delta kept (default 0.2)",
        "scale": "multiplier of the merged delta (default 1)",
    }

    def merge(self, inp: MergeInput) -> np.ndarray:
        base = require_base(inp, self.name)
        density = fraction_option(inp, "density", 0.2)
        scale = float_option(inp, "scale", 1.0)
        deltas = np.stack([trim(inp.ours - base, density), trim(inp.theirs - base, density)])
        sign = np.sign(deltas.sum(axis=0))
        agree = (np.sign(deltas) == sign) & (deltas != 0)
        count = agree.sum(axis=0)
        total = np.where(agree, deltas, 0.0).sum(axis=0)
        merged = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        return base + scale * merged
