"""Allow `python -m git_theta ...`, which is what `git theta install` registers with git."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    if sys.argv[1:] == ["filter-process"]:
        # OpenBLAS (loaded with numpy) otherwise starts a thread per core that spins for
        # ~0.1 s; a filter makes no large BLAS calls (only LoRA's small B @ A)
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        # git starts this for every command: skip loading the command line (filter_command.py)
        from git_theta.filter_command import main
    else:
        from git_theta.cli import main
    main()
