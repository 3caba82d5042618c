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


# -- index plumbing: `git theta add`, the merge driver, `git theta resolve` ---------------------


def check_attr(attr: str, path: str, cwd: str | Path | None = None) -> str | None:
    """The value of gitattribute `attr` for `path` ("unspecified" and "unset" give None)."""
    out = run_text("check-attr", attr, "--", path, cwd=cwd)
    value = out.rsplit(": ", 1)[-1] if out else ""
    return None if value in ("", "unspecified", "unset") else value


def hash_object(data: bytes, cwd: str | Path | None = None) -> str:
    """Write `data` as a blob exactly as given (no clean filter: it already is a manifest)."""
    return run("hash-object", "-w", "--no-filters", "--stdin", cwd=cwd, input=data).decode().strip()


def stage_blob(path: str, blob: str, mode: str = "100644", cwd: str | Path | None = None) -> None:
    """Put blob `blob` in the index at `path`, stage 0 (this also resolves a conflict)."""
    run("update-index", "--add", "--cacheinfo", f"{mode},{blob},{path}", cwd=cwd)


def index_entries(path: str, cwd: str | Path | None = None) -> dict[int, tuple[str, str]]:
    """{stage: (mode, blob oid)} of `path` in the index: {0: ...} normally, 1-3 in a conflict."""
    out: dict[int, tuple[str, str]] = {}
    raw = run("ls-files", "--stage", "-z", "--", path, cwd=cwd)
    for rec in raw.split(b"\0"):
        if not rec:
            continue
        info, _, name = rec.decode(errors="surrogateescape").partition("\t")
        if name != path:
            continue
        mode, oid, stage = info.split()
        out[int(stage)] = (mode, oid)
    return out


def index_mode(path: str, cwd: str | Path | None = None) -> str | None:
    """The file mode (e.g. 100644) of `path` at stage 0 of the index, None if not there."""
    entry = index_entries(path, cwd=cwd).get(0)
    return entry[0] if entry else None


def add(*paths: str, cwd: str | Path | None = None) -> None:
    run("add", "--", *paths, cwd=cwd)
