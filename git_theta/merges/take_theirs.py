"""`take-theirs`: take the value of the branch being merged in."""

from __future__ import annotations

import numpy as np

from git_theta.merges.base import MergeInput, MergeStrategy


class TakeTheirs(MergeStrategy):
    name = "take-theirs"
    summary = "take their value (also keeps or drops it when they added or removed it)"
    picks = "theirs"
    blockwise = True

    def merge(self, inp: MergeInput) -> np.ndarray:
        return inp.theirs
