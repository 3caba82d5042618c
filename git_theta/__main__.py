"""Allow `python -m git_theta ...`, which is what `git theta install` registers with git."""

from __future__ import annotations

import os
import sys


def _drop_working_directory() -> None:
    """git runs us in the repository's top directory. `-P` keeps it off sys.path, but an
    empty entry in PYTHONPATH (`PYTHONPATH=$X:$PYTHONPATH` with nothing set) puts it back:
    a cloned repository's `numpy.py` must never be imported in place of numpy."""
    cwd = os.getcwd()
    sys.path[:] = [p for p in sys.path if p not in ("", ".") and os.path.abspath(p) != cwd]


if __name__ == "__main__":
    _drop_working_directory()
    args = sys.argv[1:]
    if args[:1] == ["filter-process"]:
        # OpenBLAS (loaded with numpy) otherwise starts a thread per core that spins for
        # ~0.1 s; a filter makes no large BLAS calls (only LoRA's small B @ A)
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        # git starts this for every command: skip loading the command line, and hand git's
        # pipes to a warm worker when there is one (warm_client.py)
        from git_theta import warm_client

        warm_client.main(args)
    elif args[:1] == ["warm-server"]:
        from git_theta import warm_server

        warm_server.main(args[1:])
    else:
        from git_theta.cli import main

        main()
