"""Which git command started this process, to skip a smudge nobody will check out (and,
for clean_record.py, which git process that is and so when it started).

`git diff`, `git log -p` and `git show` smudge a blob into a temporary file before handing
it to a textconv or external diff program; for git-theta that means rebuilding the whole
checkpoint, only for the diff driver to throw it away and read the manifest. When the git
process above us runs one of those commands (and no user-supplied external diff, such as
`git difftool`, wants real files), smudge passes the manifest through instead.

`git archive` and `git cat-file --filters` smudge into their own output: there a checkpoint
is always streamed through git, never written to the working tree by git-theta (direct
checkout, materialize.py), which would leave the manifest in the archive.

Linux only (reads /proc); anywhere else both checks are False and smudge works as usual.
"""

from __future__ import annotations

import os
from pathlib import Path

DIFF_COMMANDS = frozenset({"diff", "log", "show", "whatchanged"})
OUTPUT_COMMANDS = frozenset({"archive", "cat-file"})
# git options that take the next argument as their value
_VALUED = frozenset({"-c", "-C", "--git-dir", "--work-tree", "--namespace", "--config-env"})
MAX_DEPTH = 3  # git -> sh -c -> python
# the process whose ancestors are git's: this one, or the front a warm worker stands for
_origin: int | None = None


def stand_in_for(pid: int) -> None:
    """A warm worker (a child of the warm server) answers for the front `pid` git started."""
    global _origin
    _origin = pid


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode("utf-8", "surrogateescape") for a in raw.split(b"\0") if a]


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after its ')'
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[1]) if len(fields) > 1 else None


def git_subcommand(argv: list[str]) -> str | None:
    """`diff` for `git -C x --no-pager diff ...`; None if argv is not a git command."""
    if not argv:
        return None
    prog = os.path.basename(argv[0]).removesuffix(".exe")
    if prog.startswith("git-") and len(prog) > 4:  # the dashed form, git-core/git-diff
        return prog[4:]
    if prog != "git":
        return None
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg in _VALUED:
            i += 2
            continue
        if arg.startswith("-"):
            i += 1
            continue
        return arg
    return None


def nearest_git() -> tuple[int, str] | None:
    """The pid and subcommand of the nearest git process above this one."""
    pid: int | None = _origin or os.getpid()
    for _ in range(MAX_DEPTH):
        pid = _parent(pid) if pid else None
        if not pid:
            return None
        sub = git_subcommand(_cmdline(pid) or [])
        if sub is not None:
            return pid, sub
    return None


def nearest_git_command() -> str | None:
    """The subcommand of the nearest git process above this one (`checkout`, `diff`, ...)."""
    found = nearest_git()
    return found[1] if found else None


def diff_context() -> bool:
    """True when the nearest git ancestor runs diff/log/show with git-theta's own driver."""
    if os.environ.get("GIT_EXTERNAL_DIFF") or os.environ.get("GIT_THETA_DIFF_SMUDGE") == "1":
        return False  # a difftool or the user wants real checkpoints
    return nearest_git_command() in DIFF_COMMANDS


def output_context() -> bool:
    """True when the nearest git ancestor smudges into its own output (`git archive`, `git
    cat-file --filters`), not into the working tree, so a direct checkout cannot apply."""
    return nearest_git_command() in OUTPUT_COMMANDS
