"""`fisher`: Fisher-weighted average (Matena & Raffel, 2022), element-wise.

theta = (l_o F_o theta_o + l_t F_t theta_t) / (l_o F_o + l_t F_t), where F are the diagonal
Fisher informations stored with each side by `git theta add --fisher` and l the weights.
Where both Fisher values are zero the weighted plain average is used.
"""

from __future__ import annotations

import numpy as np

from git_theta.errors import MergeError
from git_theta.merges.base import NEEDS_FISHER, MergeInput, MergeStrategy, weights_option


class FisherMerge(MergeStrategy):
    name = "fisher"
    summary = "Fisher-weighted average: sum l_i F_i theta_i / sum l_i F_i (element-wise)"
    needs = frozenset({NEEDS_FISHER})
    options = {"weights": "OURS,THEIRS lambdas (default 1,1)"}
    blockwise = True

    def merge(self, inp: MergeInput) -> np.ndarray:
        for side, f in (("ours", inp.fisher_ours), ("theirs", inp.fisher_theirs)):
            if f is None:
                raise MergeError(
                    f"fisher merge of {inp.name}: {side} has no Fisher information for it",
                    hint="store it with `git theta add PATH --fisher FISHER_FILE` on that "
                    "branch, or choose another strategy for this parameter",
                )
        assert inp.fisher_ours is not None and inp.fisher_theirs is not None
        fo, ft = (np.abs(f) for f in (inp.fisher_ours, inp.fisher_theirs))
        if fo.shape != inp.ours.shape or ft.shape != inp.theirs.shape:
            raise MergeError(f"fisher merge of {inp.name}: Fisher shape differs from the value's")
        lo, lt = weights_option(inp)
        num = lo * fo * inp.ours + lt * ft * inp.theirs
        den = lo * fo + lt * ft
        plain = (lo * inp.ours + lt * inp.theirs) / (lo + lt)
        safe = np.where(den > 0, den, 1.0)
        return np.where(den > 0, num / safe, plain)
