"""The pre-push hook that uploads objects, installed beside any hook already there.

A hook that is not ours (Git LFS's, the user's) is moved to `pre-push.theta-chained` and
our hook runs it after git-theta's upload, with the same arguments and the same stdin, so
both keep working and a failure of either stops the push. Installing again only refreshes
our script; uninstalling puts the chained hook back.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from git_theta import git
from git_theta.errors import GitThetaError

MARKER = "# git-theta pre-push hook"
CHAINED_SUFFIX = ".theta-chained"


def script(command: str) -> str:
    """The hook: git-theta uploads, then the chained hook (if any) runs with the same input."""
    return f"""#!/bin/sh
{MARKER} (installed by `git theta install`; `git theta uninstall --local` removes it).
# A hook that was here before lives on as pre-push{CHAINED_SUFFIX} and runs after this one.
input=$(cat)
if [ -n "$input" ]; then printf '%s\\n' "$input"; fi | {command} pre-push "$@" || exit $?
chained="$(dirname "$0")/pre-push{CHAINED_SUFFIX}"
if [ -x "$chained" ]; then
    if [ -n "$input" ]; then printf '%s\\n' "$input"; fi | "$chained" "$@" || exit $?
elif git config --get filter.lfs.process >/dev/null 2>&1 && command -v git-lfs >/dev/null 2>&1
then
    # Git LFS is in use but could not install its own hook (ours came first): do its part
    if [ -n "$input" ]; then printf '%s\\n' "$input"; fi | git lfs pre-push "$@" || exit $?
fi
exit 0
"""


def is_ours(path: Path) -> bool:
    try:
        return MARKER in path.read_text(errors="replace")
    except OSError:
        return False


def install(command: str, cwd: Path | None = None) -> Path:
    """Install (or refresh) the pre-push hook of the repository at `cwd`; its path."""
    hooks = git.hooks_dir(cwd)
    hooks.mkdir(parents=True, exist_ok=True)
    hook = hooks / "pre-push"
    chained = hooks / ("pre-push" + CHAINED_SUFFIX)
    if (hook.exists() or hook.is_symlink()) and not is_ours(hook):
        if chained.exists():
            # both exist and the hook is not ours: never destroy either
            raise GitThetaError(
                f"{hook} is not git-theta's and {chained.name} exists already",
                hint=f"merge them by hand into {chained.name}, remove {hook.name}, "
                "then run `git theta install` again",
            )
        os.replace(hook, chained)
    tmp = hook.with_name(".pre-push.theta-tmp")
    tmp.write_text(script(command))
    tmp.chmod(0o755)
    os.replace(tmp, hook)
    return hook


def needs_install(cwd: Path | None = None) -> bool:
    """True when the repository's pre-push hook is missing or not ours."""
    return not is_ours(git.hooks_dir(cwd) / "pre-push")


def uninstall(cwd: Path | None = None) -> bool:
    """Remove our hook and put a chained one back; False if ours was not installed."""
    hooks = git.hooks_dir(cwd)
    hook = hooks / "pre-push"
    if not is_ours(hook):
        return False
    chained = hooks / ("pre-push" + CHAINED_SUFFIX)
    if chained.exists():
        os.replace(chained, hook)
    else:
        hook.unlink()
    return True


def hook_command(python: str) -> str:
    """How git starts git-theta. `-P` (Python 3.11+): git runs filters and drivers in the
    repository's top directory, and plain `-m` would put that directory first on sys.path,
    so a cloned repository's own `numpy.py` or `git_theta/` would run in our place."""
    from git_theta.warm_client import SAFE_PATH_FLAGS

    return shlex.join([python, *SAFE_PATH_FLAGS, "-m", "git_theta"])
