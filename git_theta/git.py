"""The only module that runs git: small wrappers over plumbing commands."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from git_theta.errors import GitError, NotARepositoryError


def run(
    *args: str, cwd: str | Path | None = None, input: bytes | None = None, check: bool = True
) -> bytes:
    proc = subprocess.run(["git", *args], cwd=cwd, input=input, capture_output=True)
    if check and proc.returncode != 0:
        raise GitError(list(args), proc.returncode, proc.stderr.decode(errors="replace"))
    return proc.stdout


def run_text(*args: str, cwd: str | Path | None = None, check: bool = True) -> str:
    return run(*args, cwd=cwd, check=check).decode().strip()


def common_dir(cwd: str | Path | None = None) -> Path:
    """The git dir shared by all worktrees of the repository containing `cwd`."""
    try:
        out = run_text("rev-parse", "--git-common-dir", cwd=cwd)
    except GitError:
        raise NotARepositoryError(str(cwd or os.getcwd())) from None
    p = Path(out)
    if not p.is_absolute():
        p = Path(cwd or os.getcwd()) / p
    return p.resolve()


def toplevel(cwd: str | Path | None = None) -> Path:
    try:
        return Path(run_text("rev-parse", "--show-toplevel", cwd=cwd))
    except GitError:
        raise NotARepositoryError(str(cwd or os.getcwd())) from None


def config_get(key: str, cwd: str | Path | None = None) -> str | None:
    proc = subprocess.run(["git", "config", "--get", key], cwd=cwd, capture_output=True)
    return proc.stdout.decode().strip() if proc.returncode == 0 else None


def config_set(key: str, value: str, *, scope: str, cwd: str | Path | None = None) -> None:
    run("config", f"--{scope}", key, value, cwd=cwd)


def config_unset_section(section: str, *, scope: str, cwd: str | Path | None = None) -> bool:
    proc = subprocess.run(
        ["git", "config", f"--{scope}", "--remove-section", section], cwd=cwd, capture_output=True
    )
    return proc.returncode == 0


def show_blob(spec: str, cwd: str | Path | None = None) -> bytes | None:
    """Contents of `git cat-file blob SPEC` (e.g. `:path` or `HEAD:path`), None if absent."""
    proc = subprocess.run(["git", "cat-file", "blob", spec], cwd=cwd, capture_output=True)
    return proc.stdout if proc.returncode == 0 else None


def check_attr(attr: str, path: str, cwd: str | Path | None = None) -> str | None:
    """The value of gitattribute `attr` for `path` ("unspecified" and "unset" give None)."""
    out = run_text("check-attr", attr, "--", path, cwd=cwd)
    value = out.rsplit(": ", 1)[-1] if out else ""
    return None if value in ("", "unspecified", "unset") else value


def hash_object(data: bytes, cwd: str | Path | None = None) -> str:
    """Write `data` as a blob, verbatim (no filters: it already is a manifest); its id."""
    return run("hash-object", "-w", "--no-filters", "--stdin", cwd=cwd, input=data).decode().strip()


def index_mode(path: str, cwd: str | Path | None = None) -> str | None:
    """The file mode (e.g. 100644) of `path` in the index, None if it is not there."""
    out = run_text("ls-files", "--stage", "--", path, cwd=cwd)
    return out.split(" ", 1)[0] if out else None


def stage_blob(path: str, blob: str, mode: str = "100644", cwd: str | Path | None = None) -> None:
    """Point the index entry of `path` at blob `blob`, as `git add` would have."""
    run("update-index", "--add", "--cacheinfo", f"{mode},{blob},{path}", cwd=cwd)
