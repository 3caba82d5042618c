"""Allow `python -m git_theta ...`, which is what `git theta install` registers with git."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    from git_theta import warm_client

    sys.path[:] = warm_client.code_path()
    args = sys.argv[1:]
    if args[:1] in (["filter-process"], ["warm-server"]):
        # OpenBLAS (loaded with numpy) otherwise starts a thread per core that spins for
        # ~0.1 s; a filter makes no large BLAS calls (only LoRA's small B @ A)
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if args[:1] == ["filter-process"]:
        # git starts this for every command: skip loading the command line, and hand git's
        # pipes to a warm worker when there is one (warm_client.py)
        warm_client.main(args)
    elif args[:1] == ["warm-server"]:
        from git_theta import warm_server

        warm_server.main(args[1:])
    else:
        from git_theta.cli import main

        main()
