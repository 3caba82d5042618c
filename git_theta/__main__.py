"""Allow `python -m git_theta ...`, which is what `git theta install` registers with git."""

from __future__ import annotations

import sys

if __name__ == "__main__":
    if sys.argv[1:] == ["filter-process"]:
        # git starts this for every command: skip loading the command line (filter_command.py)
        from git_theta.filter_command import main
    else:
        from git_theta.cli import main
    main()
