"""`take-ours`: keep the value of the branch being merged into."""

from __future__ import annotations

import numpy as np

from git_theta.merges.base import MergeInput, MergeStrategy


class TakeOurs(MergeStrategy):
    name = "take-ours"
    summary = "keep our value (also keeps or drops it when the other side added or removed it)"
    picks = "ours"
    blockwise = True

    def merge(self, inp: MergeInput) -> np.ndarray:
        return inp.ours
