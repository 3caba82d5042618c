"""`average`: the element-wise (weighted) mean of the two sides."""

from __future__ import annotations

import numpy as np

from git_theta.merges.base import MergeInput, MergeStrategy, weights_option


class Average(MergeStrategy):
    name = "average"
    summary = "element-wise mean: (w_o * ours + w_t * theirs) / (w_o + w_t)"
    options = {"weights": "OURS,THEIRS weights (default 1,1)"}
    blockwise = True

    def merge(self, inp: MergeInput) -> np.ndarray:
        wo, wt = weights_option(inp)
        return (wo * inp.ours + wt * inp.theirs) / (wo + wt)
