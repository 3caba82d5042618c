"""Allow `python -m git_theta ...`, which is what `git theta install` registers with git."""

from __future__ import annotations

from git_theta.cli import main

if __name__ == "__main__":
    main()
